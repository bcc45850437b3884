//! Pushing a layout's image to a plain-HTTP loopback registry the way `curl`
//! does it (HEAD, monolithic POST + PUT of each blob, PUT of the manifest),
//! without skopeo: under many tags, or as many variants one annotation apart.
//! Every answer is checked: 201 and the registry's `Docker-Content-Digest`
//! equal to the digest of the bytes sent.
//!
//! The client is a few lines of HTTP/1.1 over one `TcpStream` per request
//! (`Connection: close`), enough for a registry on 127.0.0.1 and nothing else.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use serde_json::Value;

use crate::images::{TestImage, sha256_digest};

/// A registry's answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request to `http://HOST{path}`.
pub fn request(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let mut stream = TcpStream::connect(host)?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{method} {path}: {what}"));
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of the response head"))?;
    let text = String::from_utf8_lossy(&answer[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: answer[end + 4..].to_vec(),
    })
}

fn fail(what: String) -> io::Error {
    io::Error::other(what)
}

/// Uploads a blob to `HOST/REPO` unless it is there (HEAD): POST, then a
/// monolithic PUT with `?digest=`.
pub fn upload_blob(host: &str, repo: &str, bytes: &[u8]) -> io::Result<()> {
    let digest = sha256_digest(bytes);
    if request(host, "HEAD", &format!("/v2/{repo}/blobs/{digest}"), &[], &[])?.status == 200 {
        return Ok(());
    }
    let started = request(host, "POST", &format!("/v2/{repo}/blobs/uploads/"), &[], &[])?;
    let location = started
        .header("Location")
        .filter(|_| started.status == 202)
        .ok_or_else(|| {
            fail(format!(
                "POST /v2/{repo}/blobs/uploads/ answered {}",
                started.status
            ))
        })?;
    // An absolute URL or a path; the path is what we send.
    let path = match location.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => location,
    };
    let sep = if path.contains('?') { '&' } else { '?' };
    let put = request(
        host,
        "PUT",
        &format!("{path}{sep}digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        bytes,
    )?;
    if put.status != 201 {
        return Err(fail(format!(
            "uploading {digest} to {host}/{repo} answered {}: {}",
            put.status,
            String::from_utf8_lossy(&put.body)
        )));
    }
    Ok(())
}

/// PUTs manifest `bytes` as `HOST/REPO:REFERENCE`; returns their digest,
/// which the registry's `Docker-Content-Digest` must repeat.
pub fn put_manifest(
    host: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> io::Result<String> {
    let digest = sha256_digest(bytes);
    let put = request(
        host,
        "PUT",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Content-Type", media_type)],
        bytes,
    )?;
    let answered = put.header("Docker-Content-Digest").unwrap_or("none");
    if put.status != 201 || answered != digest {
        return Err(fail(format!(
            "pushing {host}/{repo}:{reference} answered {} {answered}, expected 201 {digest}: {}",
            put.status,
            String::from_utf8_lossy(&put.body)
        )));
    }
    Ok(digest)
}

/// Uploads the config and layers of a single-manifest `image` to `HOST/REPO`.
pub fn push_blobs(image: &TestImage, host: &str, repo: &str) -> io::Result<()> {
    let manifest = image.manifest();
    let config = manifest["config"]["digest"].as_str();
    let layers = manifest["layers"].as_array().into_iter().flatten();
    for digest in config
        .into_iter()
        .chain(layers.filter_map(|l| l["digest"].as_str()))
    {
        upload_blob(host, repo, &image.blob(digest))?;
    }
    Ok(())
}

/// Pushes a single-manifest `image` to `HOST/REPO` under every one of `tags`
/// (blobs once, then the same manifest bytes under each tag).
pub fn push_tags(image: &TestImage, host: &str, repo: &str, tags: &[String]) -> io::Result<()> {
    push_blobs(image, host, repo)?;
    let bytes = image.blob(&image.digest);
    for tag in tags {
        put_manifest(host, repo, tag, &image.media_type, &bytes)?;
    }
    Ok(())
}

/// The manifest of a single-manifest `image` with one more annotation,
/// `dev.onestream.variant = name`: another digest over the same blobs.
pub fn variant(image: &TestImage, name: &str) -> Vec<u8> {
    let mut manifest = image.manifest();
    if !manifest["annotations"].is_object() {
        manifest["annotations"] = Value::Object(Default::default());
    }
    manifest["annotations"]["dev.onestream.variant"] = Value::String(name.to_string());
    serde_json::to_vec(&manifest).expect("a manifest serialises")
}

/// Pushes `count` variants of `image` ([`variant`], named `REPO:PREFIXi`) to
/// `HOST/REPO:PREFIX1..PREFIXcount`, the blobs once. Returns
/// `(HOST/REPO:PREFIXi, digest)` per variant, in order.
pub fn push_variants(
    image: &TestImage,
    host: &str,
    repo: &str,
    prefix: &str,
    count: usize,
) -> io::Result<Vec<(String, String)>> {
    push_blobs(image, host, repo)?;
    (1..=count)
        .map(|i| {
            let tag = format!("{prefix}{i}");
            let bytes = variant(image, &format!("{repo}:{tag}"));
            let digest = put_manifest(host, repo, &tag, &image.media_type, &bytes)?;
            Ok((format!("{host}/{repo}:{tag}"), digest))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::{inspect_raw, single_arch};
    use crate::registry::{Options, TestRegistry};

    /// What bench-env does: a quiet registry under a chosen directory, one
    /// image under many tags, and variants one annotation apart.
    #[test]
    fn tags_and_variants_land_with_the_bytes_sent() {
        let parent = tempfile::tempdir().unwrap();
        let registry = TestRegistry::start_with_options(&Options {
            parent: Some(parent.path().to_path_buf()),
            quiet: true,
        });
        assert!(registry.work_dir().starts_with(parent.path()));
        let layout = tempfile::tempdir().unwrap();
        let image = single_arch(layout.path(), "1.0.0", "bench");

        let tags = vec!["t1".to_string(), "t2".to_string()];
        push_tags(&image, registry.host(), "bench/app", &tags).unwrap();
        for tag in &tags {
            assert_eq!(
                sha256_digest(&inspect_raw(&registry, "bench/app", tag)),
                image.digest
            );
        }

        let pushed = push_variants(&image, registry.host(), "bench/variants", "v", 3).unwrap();
        assert_eq!(pushed.len(), 3);
        let mut digests: Vec<&str> = pushed.iter().map(|(_, d)| d.as_str()).collect();
        digests.sort_unstable();
        digests.dedup();
        assert_eq!(digests.len(), 3, "every variant has its own digest: {pushed:?}");
        assert_eq!(pushed[0].0, format!("{}/bench/variants:v1", registry.host()));
        let served = inspect_raw(&registry, "bench/variants", "v2");
        assert_eq!(sha256_digest(&served), pushed[1].1);
        assert!(
            registry.requests().is_empty(),
            "a quiet registry keeps no access log"
        );
    }
}
