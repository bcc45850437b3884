//! Deterministic OCI test images, written by hand as OCI image layouts (no code
//! of the project's own is involved), and pushed to a [`TestRegistry`] with skopeo.
//!
//! The same `(tag, seed)` always gives the same bytes and so the same digests;
//! different seeds give different digests. Several images may share one layout
//! directory under different tags.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::registry::{SKOPEO_BIN, TestRegistry, ensure_tools};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Fixed mtime of every tar entry (2023-11-14T22:13:20Z).
const MTIME: u64 = 1_700_000_000;
/// Fixed `created` of every config.
const CREATED: &str = "2023-11-14T22:13:20Z";

/// An image written into an OCI layout.
#[derive(Clone, Debug)]
pub struct TestImage {
    /// The OCI image layout directory (usable as `oci:DIR:TAG`).
    pub layout_dir: PathBuf,
    /// The tag (`org.opencontainers.image.ref.name`) in the layout.
    pub tag: String,
    /// `sha256:..` of the top manifest (image manifest or index).
    pub digest: String,
    /// Media type of the top manifest.
    pub media_type: String,
    /// Size in bytes of the top manifest.
    pub size: u64,
    /// `os/arch[/variant]` of each child of an index; empty for a single manifest.
    pub platforms: Vec<String>,
}

impl TestImage {
    /// `oci:DIR:TAG`, the skopeo/containers transport reference.
    pub fn oci_ref(&self) -> String {
        format!("oci:{}:{}", self.layout_dir.display(), self.tag)
    }

    /// The raw bytes of a blob of the layout (`sha256:..`).
    pub fn blob(&self, digest: &str) -> Vec<u8> {
        fs::read(blob_path(&self.layout_dir, digest))
            .unwrap_or_else(|e| panic!("blob {digest} in {}: {e}", self.layout_dir.display()))
    }

    /// The top manifest, parsed.
    pub fn manifest(&self) -> Value {
        serde_json::from_slice(&self.blob(&self.digest)).expect("manifest JSON")
    }
}

/// A written blob.
#[derive(Clone, Debug)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
}

impl Blob {
    pub fn descriptor(&self, media_type: &str) -> Value {
        json!({"mediaType": media_type, "digest": self.digest, "size": self.size})
    }
}

/// `sha256:<hex>` of bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Where a blob lives in a layout.
pub fn blob_path(layout_dir: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest
        .split_once(':')
        .unwrap_or_else(|| panic!("not a digest: {digest}"));
    layout_dir.join("blobs").join(alg).join(hex)
}

/// Writes `bytes` as a blob of the layout at `dir` (creating the layout).
pub fn write_blob(dir: &Path, bytes: &[u8]) -> Blob {
    init_layout(dir);
    let digest = sha256_digest(bytes);
    let path = blob_path(dir, &digest);
    if !path.exists() {
        fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
    Blob {
        digest,
        size: bytes.len() as u64,
    }
}

fn init_layout(dir: &Path) {
    fs::create_dir_all(dir.join("blobs/sha256")).expect("create layout blobs dir");
    let marker = dir.join("oci-layout");
    if !marker.exists() {
        fs::write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#).expect("write oci-layout");
    }
}

/// A single-platform image (linux/amd64): OCI image manifest, 1 config, 2
/// small uncompressed tar layers, all derived from `seed`.
pub fn single_arch(dir: &Path, tag: &str, seed: &str) -> TestImage {
    let (manifest, _) = write_platform_image(dir, seed, "amd64", None);
    tag_manifest(dir, tag, &manifest, OCI_MANIFEST, None);
    TestImage {
        layout_dir: dir.to_path_buf(),
        tag: tag.to_string(),
        digest: manifest.digest,
        media_type: OCI_MANIFEST.to_string(),
        size: manifest.size,
        platforms: Vec::new(),
    }
}

/// A multi-platform image: OCI image index with linux/amd64 and linux/arm64/v8
/// children (each like [`single_arch`]), all derived from `seed`.
pub fn multi_arch(dir: &Path, tag: &str, seed: &str) -> TestImage {
    let mut children = Vec::new();
    let mut platforms = Vec::new();
    for (arch, variant) in [("amd64", None), ("arm64", Some("v8"))] {
        let (manifest, platform) = write_platform_image(dir, seed, arch, variant);
        let mut descriptor = manifest.descriptor(OCI_MANIFEST);
        descriptor["platform"] = platform;
        children.push(descriptor);
        platforms.push(match variant {
            Some(v) => format!("linux/{arch}/{v}"),
            None => format!("linux/{arch}"),
        });
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": children,
        "annotations": {"org.opencontainers.image.description": format!("onestream test index {seed}")},
    });
    let index = write_blob(dir, &serde_json::to_vec(&index).unwrap());
    tag_manifest(dir, tag, &index, OCI_INDEX, None);
    TestImage {
        layout_dir: dir.to_path_buf(),
        tag: tag.to_string(),
        digest: index.digest,
        media_type: OCI_INDEX.to_string(),
        size: index.size,
        platforms,
    }
}

/// Writes config, layers and manifest of one platform; returns the manifest
/// blob and its `platform` object.
fn write_platform_image(dir: &Path, seed: &str, arch: &str, variant: Option<&str>) -> (Blob, Value) {
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for n in 1..=2 {
        let tar = layer_tar(seed, arch, n);
        let blob = write_blob(dir, &tar);
        // Uncompressed layers: the diff_id is the layer digest.
        diff_ids.push(blob.digest.clone());
        layers.push(blob.descriptor(OCI_LAYER_TAR));
    }
    let mut platform = json!({"architecture": arch, "os": "linux"});
    let mut config = json!({
        "created": CREATED,
        "architecture": arch,
        "os": "linux",
    });
    if let Some(v) = variant {
        platform["variant"] = json!(v);
        config["variant"] = json!(v);
    }
    config["config"] = json!({
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["/bin/sh"],
        "Labels": {"org.onestream.test.seed": seed},
    });
    config["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
    config["history"] = json!([
        {"created": CREATED, "created_by": format!("onestream test layer 1 ({seed})")},
        {"created": CREATED, "created_by": format!("onestream test layer 2 ({seed})")},
    ]);
    let config = write_blob(dir, &serde_json::to_vec(&config).unwrap());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(OCI_CONFIG),
        "layers": layers,
    });
    (write_blob(dir, &serde_json::to_vec(&manifest).unwrap()), platform)
}

/// A small deterministic tar: a directory and a file whose content depends on
/// seed, arch and layer number; root-owned, fixed mtime.
fn layer_tar(seed: &str, arch: &str, n: u32) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    let dir = format!("layer{n}/");
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_path(&dir).unwrap();
    header.set_size(0);
    header.set_mode(0o755);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(MTIME);
    header.set_cksum();
    builder.append(&header, std::io::empty()).unwrap();

    let content = format!(
        "onestream test image\nseed: {seed}\narch: {arch}\nlayer: {n}\n{}\n",
        hex::encode(Sha256::digest(format!("{seed}/{arch}/{n}").as_bytes()))
    );
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_path(format!("{dir}{seed}-{arch}.txt")).unwrap();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(MTIME);
    header.set_cksum();
    builder.append(&header, content.as_bytes()).unwrap();
    builder.into_inner().expect("finish tar")
}

/// Adds (or replaces) the `index.json` entry for `tag` of the layout at `dir`.
pub fn tag_manifest(dir: &Path, tag: &str, blob: &Blob, media_type: &str, platform: Option<Value>) {
    init_layout(dir);
    let path = dir.join("index.json");
    let mut index: Value = match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).expect("index.json of the layout"),
        Err(_) => json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}),
    };
    let manifests = index["manifests"]
        .as_array_mut()
        .expect("index.json has manifests");
    manifests.retain(|m| m["annotations"][REF_NAME].as_str() != Some(tag));
    let mut descriptor = blob.descriptor(media_type);
    if let Some(platform) = platform {
        descriptor["platform"] = platform;
    }
    descriptor["annotations"] = json!({ REF_NAME: tag });
    manifests.push(descriptor);
    fs::write(&path, serde_json::to_vec_pretty(&index).unwrap()).expect("write index.json");
}

/// Pushes `image` to `registry` as `REPO:TAG` with
/// `skopeo copy --all --preserve-digests`, then checks that the registry serves
/// the manifest under `image.digest`. Panics with skopeo's output on failure.
pub fn push(image: &TestImage, registry: &TestRegistry, repo: &str, tag: &str) {
    ensure_tools();
    let dest = format!("docker://{}/{repo}:{tag}", registry.host());
    let output = Command::new(SKOPEO_BIN)
        // --insecure-policy: no dependence on the machine's /etc/containers/policy.json.
        .args(["--insecure-policy", "copy", "--all", "--preserve-digests"])
        .args(["--retry-times", "0"])
        .args(registry.skopeo_dest_args())
        .arg(image.oci_ref())
        .arg(&dest)
        .output()
        .expect("run skopeo copy");
    assert!(
        output.status.success(),
        "skopeo copy {} {dest} failed ({}):\nstdout:\n{}\nstderr:\n{}\nregistry log:\n{}",
        image.oci_ref(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        registry.log()
    );
    let pushed = inspect_raw(registry, repo, tag);
    assert_eq!(
        sha256_digest(&pushed),
        image.digest,
        "{dest} serves a different manifest than {}",
        image.oci_ref()
    );
}

/// The manifest bytes the registry serves for `REPO:REFERENCE` (tag or digest),
/// fetched with `skopeo inspect --raw`.
pub fn inspect_raw(registry: &TestRegistry, repo: &str, reference: &str) -> Vec<u8> {
    ensure_tools();
    let sep = if reference.contains(':') { '@' } else { ':' };
    let src = format!("docker://{}/{repo}{sep}{reference}", registry.host());
    let output = Command::new(SKOPEO_BIN)
        .args(["inspect", "--raw", "--retry-times", "0"])
        .args(registry.skopeo_args())
        .arg(&src)
        .output()
        .expect("run skopeo inspect");
    assert!(
        output.status.success(),
        "skopeo inspect --raw {src} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// `skopeo copy --preserve-digests` between any two transports (plain-HTTP
/// loopback registries), panicking with skopeo's stderr on failure.
pub fn skopeo_copy(from: &str, to: &str) {
    ensure_tools();
    let output = Command::new(SKOPEO_BIN)
        .args([
            "--insecure-policy",
            "copy",
            "--preserve-digests",
            "--retry-times",
            "0",
        ])
        .args(["--src-tls-verify=false", "--dest-tls-verify=false"])
        .arg(from)
        .arg(to)
        .output()
        .expect("run skopeo copy");
    assert!(
        output.status.success(),
        "skopeo copy {from} {to} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
