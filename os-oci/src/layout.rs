//! OCI image layouts on disk (`oci-layout`, `index.json`,
//! `blobs/sha256/…`): the store that needs no server, what build tools
//! emit and what air-gapped sites receive.
//!
//! Guarantees: a blob file only ever appears under its digest's name after
//! its bytes were hashed and matched (written to a temporary file first,
//! then renamed), and `index.json` is replaced atomically, so a reader never
//! sees a half-written layout.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::digest::{Digest, Hasher};
use crate::manifest::{self, Descriptor};
use crate::registry::Resolved;

/// The annotation that names a manifest's tag in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_VERSION: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{dir} is not an OCI image layout (no readable oci-layout file): {detail}")]
    NotALayout { dir: PathBuf, detail: String },
    #[error("{path}: {detail}")]
    Io { path: PathBuf, detail: String },
    #[error("{dir}/index.json is not a valid OCI index: {detail}")]
    BadIndex { dir: PathBuf, detail: String },
    #[error("no manifest tagged {tag:?} in layout {dir}")]
    TagNotFound { dir: PathBuf, tag: String },
    #[error("no manifest {digest} in layout {dir}")]
    DigestNotFound { dir: PathBuf, digest: Digest },
    #[error("layout {dir} holds {count} manifests; name one with oci:DIR:TAG or @sha256:…")]
    Ambiguous { dir: PathBuf, count: usize },
    #[error("blob {expected} in {dir} is corrupt: its content hashes to {actual}")]
    Corrupt {
        dir: PathBuf,
        expected: Digest,
        actual: Digest,
    },
    #[error("{what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
}

#[derive(Debug)]
pub struct Layout {
    dir: PathBuf,
}

fn io_error(path: &Path, error: std::io::Error) -> LayoutError {
    LayoutError::Io {
        path: path.to_path_buf(),
        detail: error.to_string(),
    }
}

impl Layout {
    /// Opens an existing layout.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Layout, LayoutError> {
        let dir = dir.into();
        let marker = dir.join(LAYOUT_FILE);
        let text = fs::read_to_string(&marker).map_err(|e| LayoutError::NotALayout {
            dir: dir.clone(),
            detail: e.to_string(),
        })?;
        let parsed: Value = serde_json::from_str(&text).map_err(|e| LayoutError::NotALayout {
            dir: dir.clone(),
            detail: format!("oci-layout: {e}"),
        })?;
        if parsed.get("imageLayoutVersion").and_then(Value::as_str).is_none() {
            return Err(LayoutError::NotALayout {
                dir,
                detail: "oci-layout has no imageLayoutVersion".into(),
            });
        }
        Ok(Layout { dir })
    }

    /// Opens a layout, creating an empty one if the directory has none.
    pub fn create(dir: impl Into<PathBuf>) -> Result<Layout, LayoutError> {
        let dir = dir.into();
        if dir.join(LAYOUT_FILE).exists() {
            return Layout::open(dir);
        }
        let blobs = dir.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(|e| io_error(&blobs, e))?;
        let layout = Layout { dir };
        if !layout.index_path().exists() {
            layout.write_index(
                &json!({"schemaVersion": 2, "mediaType": manifest::OCI_INDEX, "manifests": []}),
            )?;
        }
        replace_file(&layout.dir.join(LAYOUT_FILE), LAYOUT_VERSION.as_bytes())?;
        Ok(layout)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs").join("sha256").join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// The parsed `index.json`.
    pub fn index(&self) -> Result<Value, LayoutError> {
        let path = self.index_path();
        let bytes = fs::read(&path).map_err(|e| io_error(&path, e))?;
        let index: Value = serde_json::from_slice(&bytes).map_err(|e| LayoutError::BadIndex {
            dir: self.dir.clone(),
            detail: e.to_string(),
        })?;
        if !index.get("manifests").is_some_and(Value::is_array) {
            return Err(LayoutError::BadIndex {
                dir: self.dir.clone(),
                detail: "no manifests array".into(),
            });
        }
        Ok(index)
    }

    fn descriptors(&self) -> Result<Vec<Descriptor>, LayoutError> {
        let index = self.index()?;
        serde_json::from_value(index["manifests"].clone()).map_err(|e| LayoutError::BadIndex {
            dir: self.dir.clone(),
            detail: e.to_string(),
        })
    }

    /// The manifest tagged `tag`, checked against its digest, if any.
    pub fn tagged_manifest(&self, tag: &str) -> Result<Option<Vec<u8>>, LayoutError> {
        let found = self
            .descriptors()?
            .into_iter()
            .rev()
            .find(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(tag));
        found
            .map(|descriptor| self.read_blob(&descriptor.digest))
            .transpose()
    }

    /// Reads a whole blob and checks it against its name. For manifests and
    /// configs; layers are streamed with [`Layout::open_blob`].
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, LayoutError> {
        let path = self.blob_path(digest);
        let bytes = fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                LayoutError::DigestNotFound {
                    dir: self.dir.clone(),
                    digest: digest.clone(),
                }
            } else {
                io_error(&path, e)
            }
        })?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(LayoutError::Corrupt {
                dir: self.dir.clone(),
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<fs::File, LayoutError> {
        let path = self.blob_path(digest);
        fs::File::open(&path).map_err(|e| io_error(&path, e))
    }

    /// Finds the manifest a tag or digest names (or the only one, when
    /// neither is given) and describes it, after checking its bytes.
    pub fn resolve(&self, tag: Option<&str>, digest: Option<&Digest>) -> Result<Resolved, LayoutError> {
        let descriptors = self.descriptors()?;
        let chosen = match (tag, digest) {
            (Some(tag), _) => descriptors
                .iter()
                .rev()
                .find(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(tag))
                .ok_or_else(|| LayoutError::TagNotFound {
                    dir: self.dir.clone(),
                    tag: tag.to_string(),
                })?,
            (None, Some(digest)) => match descriptors.iter().find(|d| d.digest == *digest) {
                Some(descriptor) => descriptor,
                // Any manifest in the blobs (an index's child) is
                // addressable by digest too.
                None => return self.resolve_blob(digest),
            },
            (None, None) => match descriptors.as_slice() {
                [only] => only,
                _ => {
                    return Err(LayoutError::Ambiguous {
                        dir: self.dir.clone(),
                        count: descriptors.len(),
                    });
                }
            },
        };
        if let Some(digest) = digest
            && chosen.digest != *digest
        {
            return Err(LayoutError::DigestMismatch {
                what: format!("tag {:?} in {}", tag.unwrap_or_default(), self.dir.display()),
                expected: digest.clone(),
                actual: chosen.digest.clone(),
            });
        }
        let bytes = self.read_blob(&chosen.digest)?;
        let summary =
            manifest::summarize(&bytes, Some(&chosen.media_type)).map_err(|e| LayoutError::BadIndex {
                dir: self.dir.clone(),
                detail: format!("manifest {}: {e}", chosen.digest),
            })?;
        Ok(Resolved {
            digest: chosen.digest.clone(),
            media_type: chosen.media_type.clone(),
            size: bytes.len() as u64,
            platforms: summary.platforms,
        })
    }

    fn resolve_blob(&self, digest: &Digest) -> Result<Resolved, LayoutError> {
        let bytes = self.read_blob(digest)?;
        let summary = manifest::summarize(&bytes, None).map_err(|e| LayoutError::BadIndex {
            dir: self.dir.clone(),
            detail: format!("manifest {digest}: {e}"),
        })?;
        Ok(Resolved {
            digest: digest.clone(),
            media_type: summary.media_type,
            size: bytes.len() as u64,
            platforms: summary.platforms,
        })
    }

    /// Streams a blob in, hashing as it goes; it appears under its name only
    /// if the bytes match `expected`. Returns the bytes written (0 when the
    /// blob was already there).
    pub fn write_blob(&self, expected: &Digest, mut content: impl Read) -> Result<u64, LayoutError> {
        let target = self.blob_path(expected);
        if target.is_file() {
            return Ok(0);
        }
        let parent = target.parent().expect("blob paths have a parent");
        fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
        let mut temporary = tempfile::NamedTempFile::new_in(parent).map_err(|e| io_error(parent, e))?;
        let mut hasher = Hasher::default();
        let mut buffer = vec![0u8; 256 * 1024];
        let mut written = 0u64;
        loop {
            let n = content.read(&mut buffer).map_err(|e| io_error(&target, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            temporary
                .write_all(&buffer[..n])
                .map_err(|e| io_error(&target, e))?;
            written += n as u64;
        }
        let actual = hasher.finish();
        if actual != *expected {
            return Err(LayoutError::DigestMismatch {
                what: format!("blob written to {}", self.dir.display()),
                expected: expected.clone(),
                actual,
            });
        }
        temporary.as_file().sync_all().map_err(|e| io_error(&target, e))?;
        temporary
            .persist(&target)
            .map_err(|e| io_error(&target, e.error))?;
        Ok(written)
    }

    /// Records a manifest (already written as a blob) in `index.json`,
    /// tagged when `tag` is given; a previous entry with the same tag loses
    /// the tag, as `docker tag` moves a tag.
    pub fn add_manifest(
        &self,
        media_type: &str,
        digest: &Digest,
        size: u64,
        tag: Option<&str>,
    ) -> Result<(), LayoutError> {
        if !self.has_blob(digest) {
            return Err(LayoutError::DigestNotFound {
                dir: self.dir.clone(),
                digest: digest.clone(),
            });
        }
        let mut index = self.index()?;
        let manifests = index["manifests"].as_array_mut().expect("checked by index()");
        if let Some(tag) = tag {
            manifests.retain(|entry| entry["annotations"][REF_NAME].as_str() != Some(tag));
        } else if manifests
            .iter()
            .any(|entry| entry["digest"] == digest.to_string())
        {
            return Ok(());
        }
        let mut entry = Map::new();
        entry.insert("mediaType".into(), media_type.into());
        entry.insert("digest".into(), digest.to_string().into());
        entry.insert("size".into(), size.into());
        if let Some(tag) = tag {
            entry.insert("annotations".into(), json!({ REF_NAME: tag }));
        }
        manifests.push(Value::Object(entry));
        self.write_index(&index)
    }

    fn write_index(&self, index: &Value) -> Result<(), LayoutError> {
        let bytes = serde_json::to_vec(index).expect("a JSON value serializes");
        replace_file(&self.index_path(), &bytes)
    }
}

/// Runs layout work (blocking file I/O, hashing whole files) off the async
/// workers.
pub async fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, LayoutError> + Send + 'static,
) -> Result<T, LayoutError> {
    tokio::task::spawn_blocking(work)
        .await
        .expect("layout work panicked")
}

/// Writes a file by renaming a complete temporary file over it.
fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), LayoutError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let mut temporary = tempfile::NamedTempFile::new_in(parent).map_err(|e| io_error(parent, e))?;
    temporary.write_all(bytes).map_err(|e| io_error(path, e))?;
    temporary.persist(path).map_err(|e| io_error(path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_bytes(config: &Digest) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[]}}"#,
            manifest::OCI_MANIFEST
        )
        .into_bytes()
    }

    #[test]
    fn write_then_resolve_by_tag_digest_and_alone() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path().join("l")).unwrap();
        let config = Digest::of(b"{}");
        assert_eq!(layout.write_blob(&config, &b"{}"[..]).unwrap(), 2);
        assert_eq!(
            layout.write_blob(&config, &b"{}"[..]).unwrap(),
            0,
            "second write is a no-op"
        );
        let bytes = manifest_bytes(&config);
        let digest = Digest::of(&bytes);
        layout.write_blob(&digest, bytes.as_slice()).unwrap();
        layout
            .add_manifest(manifest::OCI_MANIFEST, &digest, bytes.len() as u64, Some("1.0"))
            .unwrap();

        let reopened = Layout::open(dir.path().join("l")).unwrap();
        for resolved in [
            reopened.resolve(Some("1.0"), None).unwrap(),
            reopened.resolve(None, Some(&digest)).unwrap(),
            reopened.resolve(None, None).unwrap(),
        ] {
            assert_eq!(resolved.digest, digest);
            assert_eq!(resolved.media_type, manifest::OCI_MANIFEST);
            assert_eq!(resolved.size, bytes.len() as u64);
        }
        assert!(matches!(
            reopened.resolve(Some("2.0"), None),
            Err(LayoutError::TagNotFound { .. })
        ));
    }

    #[test]
    fn a_blob_that_does_not_match_its_digest_never_lands() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let claimed = Digest::of(b"the real bytes");
        let error = layout.write_blob(&claimed, &b"other bytes"[..]).unwrap_err();
        assert!(matches!(error, LayoutError::DigestMismatch { .. }));
        assert!(!layout.has_blob(&claimed));
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("blobs/sha256")).unwrap().collect();
        assert!(leftovers.is_empty(), "temporary file left behind: {leftovers:?}");
    }

    #[test]
    fn tampered_manifest_blob_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let bytes = manifest_bytes(&Digest::of(b"{}"));
        let digest = Digest::of(&bytes);
        layout.write_blob(&digest, bytes.as_slice()).unwrap();
        layout
            .add_manifest(manifest::OCI_MANIFEST, &digest, bytes.len() as u64, Some("t"))
            .unwrap();
        fs::write(layout.blob_path(&digest), b"{\"schemaVersion\":2}").unwrap();
        assert!(matches!(
            layout.resolve(Some("t"), None),
            Err(LayoutError::Corrupt { .. })
        ));
    }

    #[test]
    fn not_a_layout() {
        let dir = tempfile::tempdir().unwrap();
        let message = Layout::open(dir.path()).unwrap_err().to_string();
        assert!(message.contains("not an OCI image layout"), "{message}");
    }
}
