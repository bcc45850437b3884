//! Pushing a layout's image to a plain-HTTP loopback registry the way `curl`
//! does it (HEAD, monolithic POST + PUT of each blob, PUT of the manifest),
//! without skopeo: under many tags, or as many variants one annotation apart;
//! images of generated layers (streamed); an image copied into another
//! repository of the same registry, its blobs mounted.
//! Every answer is checked: 201 and the registry's `Docker-Content-Digest`
//! equal to the digest of the bytes sent.
//!
//! The client is a few lines of HTTP/1.1 over one `TcpStream` per request
//! (`Connection: close`), enough for a registry on 127.0.0.1 and nothing else.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use serde_json::Value;

use sha2::{Digest, Sha256};

use crate::images::{OCI_CONFIG, OCI_LAYER_TAR, OCI_MANIFEST, TestImage, sha256_digest};

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
    request_from(host, method, path, headers, body.len() as u64, &mut &body[..])
}

/// One request to `http://HOST{path}` whose body, `len` bytes, is read from
/// `body` as it is sent (a large blob is never held in memory).
pub fn request_from(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    len: u64,
    body: &mut dyn Read,
) -> io::Result<Response> {
    let mut stream = TcpStream::connect(host)?;
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {len}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    let sent = io::copy(&mut body.take(len), &mut stream)?;
    if sent != len {
        return Err(fail(format!(
            "{method} {path}: the body ended after {sent} of {len} bytes"
        )));
    }
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
    let path = start_upload(host, repo)?;
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

/// POST /v2/REPO/blobs/uploads/: the path of the new upload session.
fn start_upload(host: &str, repo: &str) -> io::Result<String> {
    let started = request(host, "POST", &format!("/v2/{repo}/blobs/uploads/"), &[], &[])?;
    upload_path(&started, 202).ok_or_else(|| {
        fail(format!(
            "POST /v2/{repo}/blobs/uploads/ answered {}",
            started.status
        ))
    })
}

/// The path of an answer's `Location` (an absolute URL or a path) when its
/// status is `status`.
fn upload_path(answer: &Response, status: u16) -> Option<String> {
    let location = answer.header("Location").filter(|_| answer.status == status)?;
    Some(match location.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]).to_string(),
        None => location.to_string(),
    })
}

/// Uploads `size` bytes read from `body` to `HOST/REPO` as they are read:
/// POST, one streaming PATCH (hashed on the way), then PUT `?digest=`.
/// Returns the digest. Memory stays at one buffer whatever the size.
pub fn upload_stream(host: &str, repo: &str, size: u64, body: &mut dyn Read) -> io::Result<String> {
    struct Hashing<'a> {
        inner: &'a mut dyn Read,
        hasher: Sha256,
    }
    impl Read for Hashing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.hasher.update(&buf[..n]);
            Ok(n)
        }
    }
    let path = start_upload(host, repo)?;
    let mut hashing = Hashing {
        inner: body,
        hasher: Sha256::new(),
    };
    let patched = request_from(
        host,
        "PATCH",
        &path,
        &[("Content-Type", "application/octet-stream")],
        size,
        &mut hashing,
    )?;
    let path = upload_path(&patched, 202).ok_or_else(|| {
        fail(format!(
            "PATCH of {size} bytes to {host}/{repo} answered {}: {}",
            patched.status,
            String::from_utf8_lossy(&patched.body)
        ))
    })?;
    let digest = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
    let sep = if path.contains('?') { '&' } else { '?' };
    let put = request(host, "PUT", &format!("{path}{sep}digest={digest}"), &[], &[])?;
    if put.status != 201 {
        return Err(fail(format!(
            "closing the upload of {digest} to {host}/{repo} answered {}: {}",
            put.status,
            String::from_utf8_lossy(&put.body)
        )));
    }
    Ok(digest)
}

/// Mounts blob `digest` of `HOST/FROM` into `HOST/REPO` (201, or fails).
pub fn mount_blob(host: &str, repo: &str, digest: &str, from: &str) -> io::Result<()> {
    let path = format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}");
    let answer = request(host, "POST", &path, &[], &[])?;
    if answer.status != 201 {
        return Err(fail(format!(
            "mounting {digest} from {from} into {host}/{repo} answered {}",
            answer.status
        )));
    }
    Ok(())
}

/// `size` incompressible deterministic bytes from `seed`: the AES-128-CTR
/// keystream (zero IV) under the first 16 bytes of hex(sha256(seed)), read
/// as hex -- byte for byte what `head -c SIZE /dev/zero | openssl enc
/// -aes-128-ctr -K ... -iv 0` gives. Same seed and size, same bytes.
pub struct Keystream {
    crypter: openssl::symm::Crypter,
    zeros: Vec<u8>,
    out: Vec<u8>,
}

impl Keystream {
    pub fn new(seed: &str) -> Keystream {
        let key_hex = hex::encode(Sha256::digest(seed.as_bytes()));
        let key = hex::decode(&key_hex[..32]).expect("hex");
        let crypter = openssl::symm::Crypter::new(
            openssl::symm::Cipher::aes_128_ctr(),
            openssl::symm::Mode::Encrypt,
            &key,
            Some(&[0u8; 16]),
        )
        .expect("AES-128-CTR");
        Keystream {
            crypter,
            zeros: Vec::new(),
            out: Vec::new(),
        }
    }
}

impl Read for Keystream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // CTR is a stream cipher: as many bytes out as in (openssl wants
        // one block of room more).
        let n = buf.len().min(1 << 20);
        self.zeros.resize(n, 0);
        self.out.resize(n + 16, 0);
        let written = self
            .crypter
            .update(&self.zeros[..n], &mut self.out)
            .map_err(io::Error::other)?;
        buf[..written].copy_from_slice(&self.out[..written]);
        Ok(written)
    }
}

/// One layer of a [`push_generated`] image: `size` bytes of [`Keystream`] `seed`.
#[derive(Clone, Debug)]
pub struct Layer {
    pub seed: String,
    pub size: u64,
}

/// Pushes a single-platform OCI image of generated layers to
/// `HOST/REPO:TAG`; returns its manifest digest. A layer whose seed and size
/// are in `pushed` (an earlier image's) is mounted from the repository
/// named there instead of being made again; new ones are added. The config
/// names REPO (label `dev.onestream.bench`), so every image is different.
pub fn push_generated(
    host: &str,
    repo: &str,
    tag: &str,
    layers: &[Layer],
    pushed: &mut std::collections::HashMap<(String, u64), (String, String)>,
) -> io::Result<String> {
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for layer in layers {
        let key = (layer.seed.clone(), layer.size);
        let digest = match pushed.get(&key) {
            Some((digest, from)) => {
                mount_blob(host, repo, digest, from)?;
                digest.clone()
            }
            None => {
                let digest = upload_stream(host, repo, layer.size, &mut Keystream::new(&layer.seed))?;
                pushed.insert(key, (digest.clone(), repo.to_string()));
                digest
            }
        };
        descriptors
            .push(serde_json::json!({"mediaType": OCI_LAYER_TAR, "digest": digest, "size": layer.size}));
        diff_ids.push(Value::String(digest));
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"dev.onestream.bench": repo}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = serde_json::to_vec(&config).expect("a config serialises");
    upload_blob(host, repo, &config)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(&config), "size": config.len()},
        "layers": descriptors,
    });
    let manifest = serde_json::to_vec(&manifest).expect("a manifest serialises");
    put_manifest(host, repo, tag, OCI_MANIFEST, &manifest)
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

/// Copies the single-platform image `HOST/FROM:TAG` to `HOST/REPO:TAG`
/// inside one registry: its config and layers mounted from FROM, then the
/// same manifest bytes PUT. Returns their digest (what FROM served, checked
/// against its `Docker-Content-Digest`, and what REPO answered).
pub fn mount_image(host: &str, from: &str, repo: &str, tag: &str) -> io::Result<String> {
    let got = request(
        host,
        "GET",
        &format!("/v2/{from}/manifests/{tag}"),
        &[("Accept", OCI_MANIFEST)],
        &[],
    )?;
    let digest = sha256_digest(&got.body);
    let served = got.header("Docker-Content-Digest").unwrap_or("none");
    if got.status != 200 || served != digest {
        return Err(fail(format!(
            "GET {host}/{from}:{tag} answered {} {served} for bytes of {digest}: {}",
            got.status,
            String::from_utf8_lossy(&got.body)
        )));
    }
    let manifest: Value = serde_json::from_slice(&got.body)
        .map_err(|e| fail(format!("{host}/{from}:{tag}: not a JSON manifest: {e}")))?;
    let media_type = manifest["mediaType"].as_str().unwrap_or(OCI_MANIFEST);
    if media_type != OCI_MANIFEST {
        return Err(fail(format!(
            "{host}/{from}:{tag} is a {media_type}, not a single-platform OCI manifest"
        )));
    }
    let layers = manifest["layers"].as_array().into_iter().flatten();
    for blob in std::iter::once(&manifest["config"]).chain(layers) {
        let blob = blob["digest"]
            .as_str()
            .ok_or_else(|| fail(format!("{host}/{from}:{tag}: a descriptor without a digest")))?;
        mount_blob(host, repo, blob, from)?;
    }
    put_manifest(host, repo, tag, media_type, &got.body)
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

    /// What bench-env push-set does: generated layers streamed (the same
    /// bytes as openssl's AES-128-CTR keystream), a layer already pushed
    /// mounted into the next repository.
    #[test]
    fn generated_images_stream_their_layers_and_mount_shared_ones() {
        let registry = TestRegistry::start_with_options(&Options {
            parent: None,
            quiet: true,
        });
        let mut want = Vec::new();
        Keystream::new("base")
            .take(300_000)
            .read_to_end(&mut want)
            .unwrap();
        assert_eq!(want.len(), 300_000);
        let cli = std::process::Command::new("sh")
            .args(["-c", "head -c 300000 /dev/zero | openssl enc -aes-128-ctr -K \"$(printf base | sha256sum | cut -c1-32)\" -iv 00000000000000000000000000000000"])
            .output()
            .unwrap();
        assert!(
            cli.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&cli.stderr)
        );
        assert!(cli.stdout == want, "the keystream differs from openssl's");

        let mut pushed = std::collections::HashMap::new();
        let layers = |own: &str| {
            vec![
                Layer {
                    seed: "base".into(),
                    size: 300_000,
                },
                Layer {
                    seed: own.into(),
                    size: 70_000,
                },
            ]
        };
        let one = push_generated(registry.host(), "gen/one", "1.0.0", &layers("one"), &mut pushed).unwrap();
        let two = push_generated(registry.host(), "gen/two", "1.0.0", &layers("two"), &mut pushed).unwrap();
        assert_ne!(one, two);
        assert_eq!(pushed.len(), 3, "base once, then each image's own layer");
        let served = inspect_raw(&registry, "gen/two", "1.0.0");
        assert_eq!(sha256_digest(&served), two);
        let manifest: Value = serde_json::from_slice(&served).unwrap();
        let base = manifest["layers"][0]["digest"].as_str().unwrap();
        assert_eq!(base, sha256_digest(&want));
        let blob = request(
            registry.host(),
            "GET",
            &format!("/v2/gen/two/blobs/{base}"),
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(blob.status, 200);
        assert!(blob.body == want, "the mounted layer serves the bytes sent");

        // What bench-env mount-set does: the same manifest in a new
        // repository, its blobs mounted (none sent again).
        let copied = mount_image(registry.host(), "gen/two", "copy/two", "1.0.0").unwrap();
        assert_eq!(copied, two);
        assert_eq!(inspect_raw(&registry, "copy/two", "1.0.0"), served);
        let blob = request(
            registry.host(),
            "GET",
            &format!("/v2/copy/two/blobs/{base}"),
            &[],
            &[],
        )
        .unwrap();
        assert!(
            blob.status == 200 && blob.body == want,
            "the copy's layer is there"
        );
        let missing = mount_image(registry.host(), "gen/none", "copy/none", "1.0.0").unwrap_err();
        assert!(missing.to_string().contains("answered 404"), "{missing}");
    }
}
