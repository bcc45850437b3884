//! Copying a manifest tree: every blob and child first, the manifest last
//! (so the target never holds a dangling manifest), exact bytes, and with
//! `--platform` a narrowed index.

use serde_json::Value;

use super::{Copied, Copier, ImportError, count};
use crate::oci::digest::Digest;
use crate::oci::manifest;

impl Copier<'_> {
    /// Copies the manifest `digest` and everything it references, children
    /// first, unless the target has it already (one HEAD; a manifest is
    /// only ever pushed after all it names, so its presence means the whole
    /// tree's). `known` are its bytes when the caller read them already.
    /// Returns its bytes and media type when it had to copy, `None` when
    /// the target had it.
    pub(super) async fn copy_tree(
        &self,
        digest: &Digest,
        known: Option<Vec<u8>>,
    ) -> Result<Option<(Vec<u8>, String)>, ImportError> {
        if self.to.has_manifest(self.stores, digest).await? {
            return Ok(None);
        }
        self.copy_tree_as(digest, known, None).await.map(Some)
    }

    /// [`Copier::copy_tree`] without asking the target first (the caller
    /// knows it lacks the manifest, or asked under a tag already): the
    /// children or blobs, then the manifest itself, pushed under `tag` when
    /// given — one PUT both stores and tags it — or by digest.
    pub(super) async fn copy_tree_as(
        &self,
        digest: &Digest,
        known: Option<Vec<u8>>,
        tag: Option<&str>,
    ) -> Result<(Vec<u8>, String), ImportError> {
        let (bytes, media_type) = match known {
            Some(bytes) => {
                let media_type = media_type_of(&bytes, digest)?;
                (bytes, media_type)
            }
            None => self.source_manifest(digest).await?,
        };
        if manifest::is_index(&media_type) {
            let children = index_children(&bytes, &media_type);
            futures::future::try_join_all(children.iter().map(|child| Box::pin(self.copy_tree(child, None))))
                .await?;
        } else {
            let blobs = manifest_blobs(&bytes, digest)?;
            futures::future::try_join_all(blobs.iter().map(|(blob, size)| self.copy_blob(blob, *size)))
                .await?;
        }
        self.to
            .put_manifest(self.stores, &bytes, &media_type, tag)
            .await?;
        count(&self.stats.manifests, 1);
        Ok((bytes, media_type))
    }

    /// A source manifest's bytes (checked against `digest`) and media type.
    pub(super) async fn source_manifest(&self, digest: &Digest) -> Result<(Vec<u8>, String), ImportError> {
        let bytes = self.from.manifest(self.stores, digest).await?;
        let media_type = media_type_of(&bytes, digest)?;
        Ok((bytes, media_type))
    }

    /// The bytes and media type of what was copied, read from the source
    /// if the copy did not need them.
    pub(super) async fn manifest_of(&self, copied: &mut Copied) -> Result<(Vec<u8>, String), ImportError> {
        if copied.manifest.is_none() {
            copied.manifest = Some(self.source_manifest(&copied.digest).await?);
        }
        Ok(copied.manifest.clone().expect("just filled"))
    }

    /// Copies only the platforms asked for: an index becomes a new index
    /// listing just those children (their bytes unchanged), so its digest
    /// differs unless every platform was asked for; a single-platform image
    /// is copied as it is if its config names a wanted platform.
    pub(super) async fn copy_platforms(
        &self,
        digest: &Digest,
        wanted: &[String],
    ) -> Result<Copied, ImportError> {
        let (bytes, media_type) = self.source_manifest(digest).await?;
        let unchanged = |bytes: Vec<u8>, media_type: String| Copied {
            manifest: Some((bytes, media_type)),
            digest: digest.clone(),
        };
        let no_platform = |available: Vec<String>| ImportError::NoPlatform {
            digest: digest.clone(),
            wanted: wanted.join(", "),
            available: available.join(", "),
        };
        if !manifest::is_index(&media_type) {
            let config = manifest_config(&bytes, digest)?;
            let config = self.from.blob(self.stores, &config).await?;
            let platform: manifest::Platform =
                serde_json::from_slice(&config).map_err(|e| ImportError::Manifest {
                    digest: digest.clone(),
                    detail: format!("its config names no platform: {e}"),
                })?;
            if !wanted.iter().any(|w| platform_matches(w, &platform)) {
                return Err(no_platform(vec![platform.spelled()]));
            }
            self.copy_tree(digest, Some(bytes.clone())).await?;
            return Ok(unchanged(bytes, media_type));
        }
        let mut index: Value = serde_json::from_slice(&bytes).map_err(|e| ImportError::Manifest {
            digest: digest.clone(),
            detail: e.to_string(),
        })?;
        let entries = manifest::index_entries(&bytes).unwrap_or_default();
        let kept = manifest::entries_for_platforms(&entries, |platform| {
            wanted.iter().any(|w| platform_matches(w, platform))
        });
        if kept.iter().all(|entry| manifest::entry_platform(entry).is_none()) {
            let available = manifest::summarize(&bytes, None)
                .map(|s| s.platforms)
                .unwrap_or_default();
            return Err(no_platform(available));
        }
        if kept.len() == entries.len() {
            self.copy_tree(digest, Some(bytes.clone())).await?;
            return Ok(unchanged(bytes, media_type));
        }
        let children: Vec<Digest> = kept.iter().filter_map(manifest::descriptor_digest).collect();
        index["manifests"] = Value::Array(kept);
        let narrowed = serde_json::to_vec(&index).expect("a JSON value serialises");
        futures::future::try_join_all(children.iter().map(|child| self.copy_tree(child, None))).await?;
        self.to
            .put_manifest(self.stores, &narrowed, &media_type, None)
            .await?;
        count(&self.stats.manifests, 1);
        Ok(Copied {
            digest: Digest::of(&narrowed),
            manifest: Some((narrowed, media_type)),
        })
    }
}

/// `os/arch` matches any variant of that architecture (as `docker pull
/// --platform linux/arm64` takes `linux/arm64/v8`); `os/arch/variant`
/// matches only that variant.
pub(super) fn platform_matches(wanted: &str, platform: &manifest::Platform) -> bool {
    wanted == platform.spelled() || wanted == format!("{}/{}", platform.os, platform.architecture)
}

pub(super) fn media_type_of(bytes: &[u8], digest: &Digest) -> Result<String, ImportError> {
    manifest::summarize(bytes, None)
        .map(|summary| summary.media_type)
        .map_err(|e| ImportError::Manifest {
            digest: digest.clone(),
            detail: e.to_string(),
        })
}

/// The blobs an image manifest references (config first), with sizes.
pub(super) fn manifest_blobs(bytes: &[u8], digest: &Digest) -> Result<Vec<(Digest, u64)>, ImportError> {
    let parsed: Value = serde_json::from_slice(bytes).map_err(|e| ImportError::Manifest {
        digest: digest.clone(),
        detail: e.to_string(),
    })?;
    let descriptor = |value: &Value| -> Option<(Digest, u64)> {
        Some((manifest::descriptor_digest(value)?, value.get("size")?.as_u64()?))
    };
    let config = parsed.get("config").into_iter();
    let layers = parsed["layers"].as_array().into_iter().flatten();
    Ok(config.chain(layers).filter_map(descriptor).collect())
}

pub(super) fn manifest_config(bytes: &[u8], digest: &Digest) -> Result<Digest, ImportError> {
    manifest_blobs(bytes, digest)?
        .into_iter()
        .next()
        .map(|(config, _)| config)
        .ok_or_else(|| ImportError::Manifest {
            digest: digest.clone(),
            detail: "it has no config".into(),
        })
}

/// The child manifests of an index (none for an image manifest).
pub(super) fn index_children(bytes: &[u8], media_type: &str) -> Vec<Digest> {
    if !manifest::is_index(media_type) {
        return Vec::new();
    }
    manifest::index_entries(bytes)
        .unwrap_or_default()
        .iter()
        .filter_map(manifest::descriptor_digest)
        .collect()
}
