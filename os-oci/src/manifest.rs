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

/// An OCI image index listing `entries`: what a Referrers API answers, and
/// what its `sha256-<hex>` tag fallback holds.
pub fn referrers_index(entries: &[serde_json::Value]) -> Vec<u8> {
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": entries,
    });
    serde_json::to_vec(&index).expect("a JSON value serialises")
}

/// The digest a descriptor (an index entry, a layer) names, if valid.
pub fn descriptor_digest(descriptor: &serde_json::Value) -> Option<Digest> {
    descriptor.get("digest")?.as_str()?.parse().ok()
}

/// The real platform of an index entry; `None` for entries without one
/// and for the `unknown/unknown` attestation manifests builders add.
pub fn entry_platform(entry: &serde_json::Value) -> Option<Platform> {
    let platform: Platform = serde_json::from_value(entry.get("platform")?.clone()).ok()?;
    (platform.os != "unknown").then_some(platform)
}

/// Annotation by which BuildKit ties an attestation manifest to the
/// platform image it describes.
const ATTESTATION_FOR: &str = "vnd.docker.reference.digest";

/// The index entries whose platform `keep` accepts, with the attestation
/// manifests of those platform images; input order is kept.
pub fn entries_for_platforms(
    entries: &[serde_json::Value],
    keep: impl Fn(&Platform) -> bool,
) -> Vec<serde_json::Value> {
    let kept_digests: Vec<&str> = entries
        .iter()
        .filter(|entry| entry_platform(entry).is_some_and(|p| keep(&p)))
        .filter_map(|entry| entry.get("digest")?.as_str())
        .collect();
    entries
        .iter()
        .filter(|entry| {
            let digest = entry.get("digest").and_then(serde_json::Value::as_str);
            let describes = entry
                .pointer(&format!(
                    "/annotations/{}",
                    ATTESTATION_FOR.replace('~', "~0").replace('/', "~1")
                ))
                .and_then(serde_json::Value::as_str);
            digest.is_some_and(|d| kept_digests.contains(&d))
                || (entry_platform(entry).is_none() && describes.is_some_and(|d| kept_digests.contains(&d)))
        })
        .cloned()
        .collect()
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
    fn platform_selection_keeps_the_attestations_of_kept_platforms_only() {
        let entry = |digest: &str, platform: &str, describes: Option<&str>| {
            let (os, arch) = platform.split_once('/').unwrap();
            let mut value =
                serde_json::json!({"digest": digest, "platform": {"os": os, "architecture": arch}});
            if let Some(d) = describes {
                value["annotations"] = serde_json::json!({ ATTESTATION_FOR: d });
            }
            value
        };
        let entries = [
            entry("sha256:a", "linux/amd64", None),
            entry("sha256:b", "linux/arm64", None),
            entry("sha256:c", "unknown/unknown", Some("sha256:a")),
            entry("sha256:d", "unknown/unknown", Some("sha256:b")),
        ];
        let kept = entries_for_platforms(&entries, |p| p.architecture == "amd64");
        let digests: Vec<_> = kept.iter().map(|e| e["digest"].as_str().unwrap()).collect();
        assert_eq!(digests, ["sha256:a", "sha256:c"]);
        assert!(entry_platform(&entries[2]).is_none());
    }

    #[test]
    fn media_type_falls_back_to_the_served_type() {
        let summary = summarize(br#"{"schemaVersion":2}"#, Some(DOCKER_MANIFEST)).unwrap();
        assert_eq!(summary.media_type, DOCKER_MANIFEST);
        assert!(summarize(br#"{"schemaVersion":2}"#, None).is_err());
        assert!(summarize(b"not json", None).is_err());
    }
}
