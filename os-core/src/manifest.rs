//! Manifest media types and the little we read out of manifests. Manifests
//! are always kept as the exact bytes the registry served (their digest is
//! their identity); parsing here is only for what a record reports.

use serde::Deserialize;

use crate::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Every manifest type we resolve, for the `Accept` header. Without the
/// index types a registry would pick one platform's manifest for us.
pub const ACCEPT_ALL: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("manifest has no mediaType and none was given by the store")]
    UnknownMediaType,
}

/// A content descriptor, as in an index's `manifests` or a layout's
/// `index.json`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl Platform {
    /// `os/arch[/variant]`, the spelling docker, skopeo and crane use.
    pub fn spelled(&self) -> String {
        match &self.variant {
            Some(variant) if !variant.is_empty() => {
                format!("{}/{}/{}", self.os, self.architecture, variant)
            }
            _ => format!("{}/{}", self.os, self.architecture),
        }
    }
}

/// The `manifests` descriptors of an index (or of a referrers answer), as
/// stored; empty when there are none.
pub fn index_entries(bytes: &[u8]) -> Result<Vec<serde_json::Value>, serde_json::Error> {
    let index: serde_json::Value = serde_json::from_slice(bytes)?;
    Ok(index
        .get("manifests")
        .and_then(serde_json::Value::as_array)
        .cloned()
        .unwrap_or_default())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

/// What a record says about a manifest: its media type and, for an index,
/// the platforms it covers (entries without a platform, such as attestation
/// manifests some builders add, are not platforms and are left out).
pub struct Summary {
    pub media_type: String,
    pub platforms: Vec<String>,
}

/// Reads media type and platforms from manifest bytes. `served_type` is the
/// Content-Type the store declared; the manifest's own field wins when both
/// exist, since it is covered by the digest and the header is not.
pub fn summarize(bytes: &[u8], served_type: Option<&str>) -> Result<Summary, ManifestError> {
    let envelope: Envelope = serde_json::from_slice(bytes)?;
    let media_type = envelope
        .media_type
        .or_else(|| served_type.map(str::to_string))
        .ok_or(ManifestError::UnknownMediaType)?;
    let platforms = if is_index(&media_type) {
        envelope
            .manifests
            .iter()
            .filter_map(|d| d.platform.as_ref())
            .filter(|p| p.os != "unknown")
            .map(Platform::spelled)
            .collect()
    } else {
        Vec::new()
    };
    Ok(Summary {
        media_type,
        platforms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_platforms_skip_attestation_entries() {
        let d = |n: u8| format!("sha256:{}", format!("{n:02x}").repeat(32));
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"os":"unknown","architecture":"unknown"}}}}]}}"#,
            d(1),
            d(2),
            d(3)
        );
        let summary = summarize(index.as_bytes(), None).unwrap();
        assert_eq!(summary.media_type, OCI_INDEX);
        assert_eq!(summary.platforms, ["linux/amd64", "linux/arm64/v8"]);
    }

    #[test]
    fn media_type_falls_back_to_the_served_type() {
        let summary = summarize(br#"{"schemaVersion":2}"#, Some(DOCKER_MANIFEST)).unwrap();
        assert_eq!(summary.media_type, DOCKER_MANIFEST);
        assert!(summarize(br#"{"schemaVersion":2}"#, None).is_err());
        assert!(summarize(b"not json", None).is_err());
    }
}
