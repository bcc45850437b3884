//! The copy of an accepted import, run in its own thread as ACR's runs
//! server-side.
//!
//! From the source (the registry `resourceId` names, or any `registryUri`
//! `host:port`; plain HTTP, with `credentials` as Basic auth or for a
//! Bearer token from the registry's realm; a stand-in registry's own
//! [`AcrEntry::credentials`](super::AcrEntry::credentials) otherwise) to the
//! target: every blob of every platform, each child manifest by digest
//! before its index, then the exact top manifest bytes under each target
//! tag, or by digest into each untagged repository. NOTHING attached is
//! copied: no `sha256-….sig`/`.att` tags, no referrers — ACR import's
//! documented behaviour, which a client must make up for. A registry of the
//! stand-in is reached at its
//! [`AcrEntry::copy_host`](super::AcrEntry::copy_host) (its backend, when
//! clients see it through a proxy), as ACR's internal copy never passes
//! through the client's network.
//!
//! The operation's failures: the source image missing → 404
//! `ManifestUnknown` naming it; more than [`MANIFEST_LIMIT`] manifests (the
//! top one plus every index entry, as ACR counts them) → 400
//! `TooManyManifests`; `NoForce` with a target tag that names another
//! digest → 409 `Conflict`, before anything is copied (a tag already naming
//! the same digest is no conflict: a re-run is a no-op); a source or target
//! that fails or refuses → 400 `InvalidParameters` (`Error copying …`, as
//! ACR reports copy failures). Codes other than ARM's documented ones
//! (`TooManyManifests`, `ManifestUnknown`, `ExportPolicyDisabled`) are this
//! stand-in's choice.

use serde_json::Value;

use super::MANIFEST_LIMIT;
use super::import::Reference;
use super::operation::{Failure, failure};
use super::registry_client::RegistryClient;
use crate::images::sha256_digest;

const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

fn copy_error(message: impl std::fmt::Display) -> Failure {
    failure(400, "InvalidParameters", format!("Error copying {message}"))
}

/// One manifest of the image, children first.
struct Node {
    digest: String,
    media_type: String,
    bytes: Vec<u8>,
    children: Vec<Node>,
}

impl Node {
    /// Config and layer digests of every image manifest below (and at) this one.
    fn blobs(&self, into: &mut Vec<String>) {
        for child in &self.children {
            child.blobs(into);
        }
        let manifest: Value = serde_json::from_slice(&self.bytes).unwrap_or(Value::Null);
        let config = manifest["config"]["digest"].as_str();
        let layers = manifest["layers"].as_array().into_iter().flatten();
        for digest in config
            .into_iter()
            .chain(layers.filter_map(|l| l["digest"].as_str()))
        {
            if !into.iter().any(|d| d == digest) {
                into.push(digest.to_string());
            }
        }
    }
}

/// One accepted import, run in its own thread.
pub(super) struct Job {
    pub(super) source: RegistryClient,
    pub(super) source_repo: String,
    pub(super) reference: Reference,
    pub(super) target: RegistryClient,
    pub(super) tags: Vec<(String, String)>,
    pub(super) untagged: Vec<String>,
    pub(super) force: bool,
    pub(super) fail_midway: bool,
}

impl Job {
    fn image(&self) -> String {
        match &self.reference {
            Reference::Tag(tag) => format!("{}:{tag}", self.source_repo),
            Reference::Digest(digest) => format!("{}@{digest}", self.source_repo),
        }
    }

    pub(super) fn run(&self) -> Result<(), Failure> {
        let image = self.image();
        let top = self.fetch(self.reference.as_str()).map_err(|e| match e {
            Fetch::Missing => failure(
                404,
                "ManifestUnknown",
                format!(
                    "The source image '{image}' was not found in registry '{}'.",
                    self.source.host
                ),
            ),
            Fetch::Failed(detail) => copy_error(format!("manifest {image}: {detail}")),
        })?;
        if let Reference::Digest(digest) = &self.reference
            && top.1 != *digest
        {
            return Err(copy_error(format!(
                "manifest {image}: the source served bytes of {}",
                top.1
            )));
        }
        let mut count = 1;
        let top = self.tree(top, &mut count)?;

        let mut repos: Vec<&str> = Vec::new();
        for repo in self.tags.iter().map(|(r, _)| r).chain(&self.untagged) {
            if !repos.contains(&repo.as_str()) {
                repos.push(repo);
            }
        }
        if !self.force {
            for (repo, tag) in &self.tags {
                let answer = self
                    .target
                    .send(
                        "HEAD",
                        &format!("/v2/{repo}/manifests/{tag}"),
                        &[("Accept", MANIFEST_TYPES)],
                        &[],
                    )
                    .map_err(|e| copy_error(format!("to the target: {e}")))?;
                let existing = answer.header("Docker-Content-Digest").unwrap_or_default();
                if answer.status == 200 && existing != top.digest {
                    return Err(failure(
                        409,
                        "Conflict",
                        format!(
                            "Tag '{repo}:{tag}' already exists in the target registry and names {existing}, not {}; import with mode 'Force' to overwrite it.",
                            top.digest
                        ),
                    ));
                }
            }
        }

        let mut blobs = Vec::new();
        top.blobs(&mut blobs);
        for repo in &repos {
            for digest in &blobs {
                self.copy_blob(repo, digest)?;
            }
        }
        if self.fail_midway {
            return Err(copy_error(format!(
                "manifests of {image}: the import stopped after its {} blobs were copied (a fault injected into the ARM stand-in)",
                blobs.len()
            )));
        }
        for repo in &repos {
            for child in &top.children {
                self.put_tree(repo, child)?;
            }
        }
        for repo in &self.untagged {
            self.put(repo, &top.digest, &top)?;
        }
        for (repo, tag) in &self.tags {
            self.put(repo, tag, &top)?;
        }
        Ok(())
    }

    /// The source's manifest `reference`: bytes, digest, media type.
    fn fetch(&self, reference: &str) -> Result<(Vec<u8>, String, String), Fetch> {
        let path = format!("/v2/{}/manifests/{reference}", self.source_repo);
        let answer = self
            .source
            .send("GET", &path, &[("Accept", MANIFEST_TYPES)], &[])
            .map_err(Fetch::Failed)?;
        match answer.status {
            200 => {}
            404 => return Err(Fetch::Missing),
            status => {
                return Err(Fetch::Failed(format!(
                    "{} answered {status}: {}",
                    self.source.host,
                    String::from_utf8_lossy(&answer.body).trim()
                )));
            }
        }
        let digest = sha256_digest(&answer.body);
        let manifest: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        let media_type = answer
            .header("Content-Type")
            .map(|t| t.split(';').next().unwrap_or(t).trim().to_string())
            .filter(|t| t.contains('/') && t != "application/json")
            .or_else(|| manifest["mediaType"].as_str().map(str::to_string))
            .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".to_string());
        Ok((answer.body, digest, media_type))
    }

    /// The manifest and, for an index, its children, counting manifests
    /// against ACR's limit before fetching more.
    fn tree(
        &self,
        (bytes, digest, media_type): (Vec<u8>, String, String),
        count: &mut usize,
    ) -> Result<Node, Failure> {
        let manifest: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let entries: Vec<String> = manifest["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["digest"].as_str().map(str::to_string))
            .collect();
        *count += entries.len();
        if *count > MANIFEST_LIMIT {
            return Err(failure(
                400,
                "TooManyManifests",
                format!(
                    "The image '{}' has more than {MANIFEST_LIMIT} manifests ({} counted so far); an image to import may have at most {MANIFEST_LIMIT}.",
                    self.image(),
                    count
                ),
            ));
        }
        let mut children = Vec::new();
        for child in entries {
            let fetched = self.fetch(&child).map_err(|e| match e {
                Fetch::Missing => copy_error(format!(
                    "manifest {}@{child}: the index names it and the source has no such manifest",
                    self.source_repo
                )),
                Fetch::Failed(detail) => {
                    copy_error(format!("manifest {}@{child}: {detail}", self.source_repo))
                }
            })?;
            if fetched.1 != child {
                return Err(copy_error(format!(
                    "manifest {}@{child}: the source served bytes of {}",
                    self.source_repo, fetched.1
                )));
            }
            children.push(self.tree(fetched, count)?);
        }
        Ok(Node {
            digest,
            media_type,
            bytes,
            children,
        })
    }

    fn copy_blob(&self, repo: &str, digest: &str) -> Result<(), Failure> {
        let fail = |detail: String| copy_error(format!("blob {digest} into {repo}: {detail}"));
        let there = self
            .target
            .send("HEAD", &format!("/v2/{repo}/blobs/{digest}"), &[], &[])
            .map_err(fail)?;
        if there.status == 200 {
            return Ok(());
        }
        let blob = self
            .source
            .send(
                "GET",
                &format!("/v2/{}/blobs/{digest}", self.source_repo),
                &[],
                &[],
            )
            .map_err(fail)?;
        if blob.status != 200 || sha256_digest(&blob.body) != digest {
            return Err(fail(format!(
                "the source answered {} with bytes of {}",
                blob.status,
                sha256_digest(&blob.body)
            )));
        }
        let started = self
            .target
            .send("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], &[])
            .map_err(fail)?;
        let location = started
            .header("Location")
            .filter(|_| started.status == 202)
            .map(path_of)
            .ok_or_else(|| fail(format!("starting the upload answered {}", started.status)))?;
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = self
            .target
            .send(
                "PUT",
                &format!("{location}{sep}digest={digest}"),
                &[("Content-Type", "application/octet-stream")],
                &blob.body,
            )
            .map_err(fail)?;
        if put.status != 201 {
            return Err(fail(format!(
                "the upload answered {}: {}",
                put.status,
                String::from_utf8_lossy(&put.body).trim()
            )));
        }
        Ok(())
    }

    fn put_tree(&self, repo: &str, node: &Node) -> Result<(), Failure> {
        for child in &node.children {
            self.put_tree(repo, child)?;
        }
        self.put(repo, &node.digest, node)
    }

    fn put(&self, repo: &str, reference: &str, node: &Node) -> Result<(), Failure> {
        let answer = self
            .target
            .send(
                "PUT",
                &format!("/v2/{repo}/manifests/{reference}"),
                &[("Content-Type", &node.media_type)],
                &node.bytes,
            )
            .map_err(|e| copy_error(format!("manifest {repo}:{reference}: {e}")))?;
        if answer.status != 201 {
            return Err(copy_error(format!(
                "manifest {repo}:{reference}: the target answered {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body).trim()
            )));
        }
        Ok(())
    }
}

enum Fetch {
    Missing,
    Failed(String),
}

/// The path (and query) of a `Location`, absolute or not.
fn path_of(location: &str) -> String {
    match location.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]).to_string(),
        None => location.to_string(),
    }
}
