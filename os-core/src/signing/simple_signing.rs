//! cosign's signature format ("simple signing", tag-based discovery): the
//! payload that is signed, and the `sha256-<hex>.sig` manifest that carries
//! one layer per signature.
//!
//! Payload bytes are built exactly as cosign builds them (compact JSON,
//! fixed field order, `optional` null or keys sorted), and are only ever
//! verified as the exact bytes stored, never re-serialized.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::oci::digest::Digest;
use crate::oci::manifest;
use crate::oci::reference::{DOCKER_HUB, RegistryRef};

pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub const PAYLOAD_TYPE: &str = "cosign container image signature";

/// The tag cosign stores the signatures of `digest` under.
pub fn signature_tag(digest: &Digest) -> String {
    format!("{}.sig", digest.tag_form())
}

/// The identity cosign signs: the repository without tag or digest, with
/// Docker Hub spelled `index.docker.io/…` (go-containerregistry's name).
pub fn docker_reference(image: &RegistryRef) -> String {
    if image.registry == DOCKER_HUB {
        format!("index.docker.io/{}", image.repository)
    } else {
        image.name()
    }
}

/// The exact bytes cosign signs for `digest` claimed by `docker_reference`.
pub fn payload(docker_reference: &str, digest: &Digest, annotations: &BTreeMap<String, String>) -> Vec<u8> {
    let optional = if annotations.is_empty() {
        Value::Null
    } else {
        Value::Object(
            annotations
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
    };
    let payload = json!({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest.to_string()},
            "type": PAYLOAD_TYPE,
        },
        "optional": optional,
    });
    go_json(&payload).into_bytes()
}

/// Go's `encoding/json` escapes `<`, `>` and `&` (and U+2028/2029); cosign
/// signs those bytes, so we write them the same way.
fn go_json(value: &Value) -> String {
    let text = serde_json::to_string(value).expect("JSON values serialize");
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// What a verifier reads out of a payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    pub docker_reference: String,
    pub manifest_digest: String,
    pub optional: Map<String, Value>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("payload is not JSON: {0}")]
    Json(String),
    #[error("payload has no {0}")]
    Missing(&'static str),
    #[error("payload type is {0:?}, not {PAYLOAD_TYPE:?}")]
    WrongType(String),
}

pub fn parse_payload(bytes: &[u8]) -> Result<Payload, PayloadError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| PayloadError::Json(e.to_string()))?;
    let critical = value.get("critical").ok_or(PayloadError::Missing("critical"))?;
    let kind = critical
        .get("type")
        .and_then(Value::as_str)
        .ok_or(PayloadError::Missing("critical.type"))?;
    if kind != PAYLOAD_TYPE {
        return Err(PayloadError::WrongType(kind.to_string()));
    }
    let docker_reference = critical
        .pointer("/identity/docker-reference")
        .and_then(Value::as_str)
        .ok_or(PayloadError::Missing("critical.identity.docker-reference"))?;
    let manifest_digest = critical
        .pointer("/image/docker-manifest-digest")
        .and_then(Value::as_str)
        .ok_or(PayloadError::Missing("critical.image.docker-manifest-digest"))?;
    let optional = value
        .get("optional")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    Ok(Payload {
        docker_reference: docker_reference.to_string(),
        manifest_digest: manifest_digest.to_string(),
        optional,
    })
}

/// One layer of a `.sig` manifest, as stored (annotations included).
#[derive(Debug, Clone)]
pub struct SignatureLayer {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    /// The `dev.cosignproject.cosign/signature` annotation, if any.
    pub signature: Option<String>,
    /// The descriptor exactly as found, kept when the manifest is rewritten.
    pub descriptor: Value,
}

impl SignatureLayer {
    /// The signature bytes (base64 may be wrapped with newlines).
    pub fn signature_bytes(&self) -> Option<Vec<u8>> {
        use base64::Engine as _;
        let text: String = self
            .signature
            .as_deref()?
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        base64::engine::general_purpose::STANDARD.decode(text).ok()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SigManifestError {
    #[error("signature manifest is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("signature manifest has no layers array")]
    NoLayers,
    #[error("signature manifest layer {index}: {detail}")]
    BadLayer { index: usize, detail: String },
}

/// The layers of a `.sig` manifest.
pub fn parse_signature_manifest(bytes: &[u8]) -> Result<Vec<SignatureLayer>, SigManifestError> {
    let manifest: Value = serde_json::from_slice(bytes)?;
    let layers = manifest
        .get("layers")
        .and_then(Value::as_array)
        .ok_or(SigManifestError::NoLayers)?;
    layers
        .iter()
        .enumerate()
        .map(|(index, layer)| {
            let bad = |detail: &str| SigManifestError::BadLayer {
                index,
                detail: detail.to_string(),
            };
            Ok(SignatureLayer {
                media_type: layer
                    .get("mediaType")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("no mediaType"))?
                    .to_string(),
                digest: layer
                    .get("digest")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("no digest"))?
                    .parse()
                    .map_err(|e: crate::oci::digest::DigestError| bad(&e.to_string()))?,
                size: layer
                    .get("size")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| bad("no size"))?,
                signature: layer
                    .pointer(&format!(
                        "/annotations/{}",
                        SIGNATURE_ANNOTATION.replace('/', "~1")
                    ))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                descriptor: layer.clone(),
            })
        })
        .collect()
}

/// A new signature layer's descriptor.
pub fn signature_descriptor(payload: &[u8], signature_base64: &str) -> Value {
    json!({
        "mediaType": SIMPLE_SIGNING,
        "size": payload.len(),
        "digest": Digest::of(payload).to_string(),
        "annotations": {SIGNATURE_ANNOTATION: signature_base64},
    })
}

/// The OCI empty descriptor's content (image-spec 1.1), used as the
/// `.sig` manifest's config.
pub const EMPTY_CONFIG: &[u8] = b"{}";
pub const EMPTY_CONFIG_TYPE: &str = "application/vnd.oci.empty.v1+json";

/// A `.sig` manifest over `layers`, with the OCI empty config. cosign
/// writes an image config listing the layers as `diff_ids`, but every
/// reader (cosign, skopeo/podman, policy-controller) reads only the
/// layers; a constant config is one blob per repository instead of one
/// upload per signature, which is most of a signature's cost on a
/// registry that fsyncs each write. cosign appends to such a manifest and
/// verifies it (tested).
pub fn signature_manifest(layers: &[Value]) -> Vec<u8> {
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_MANIFEST,
        "config": {"mediaType": EMPTY_CONFIG_TYPE, "size": EMPTY_CONFIG.len(), "digest": Digest::of(EMPTY_CONFIG).to_string()},
        "layers": layers,
    });
    serde_json::to_vec(&manifest).expect("JSON values serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_bytes_match_cosign() {
        let digest: Digest = format!("sha256:{}", "d34db33f".repeat(8)).parse().unwrap();
        assert_eq!(
            String::from_utf8(payload("example.com/test/image", &digest, &BTreeMap::new())).unwrap(),
            format!(
                r#"{{"critical":{{"identity":{{"docker-reference":"example.com/test/image"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
            )
        );
        let annotations = BTreeMap::from([
            ("z".to_string(), "<&>".to_string()),
            ("a".to_string(), "1".to_string()),
        ]);
        let text = String::from_utf8(payload("r/x", &digest, &annotations)).unwrap();
        assert!(
            text.ends_with(r#""optional":{"a":"1","z":"\u003c\u0026\u003e"}}"#),
            "{text}"
        );
        let parsed = parse_payload(text.as_bytes()).unwrap();
        assert_eq!(parsed.optional["z"], "<&>");
    }

    #[test]
    fn docker_hub_identity_is_index_docker_io() {
        let image: RegistryRef = "alpine".parse().unwrap();
        assert_eq!(docker_reference(&image), "index.docker.io/library/alpine");
    }

    #[test]
    fn manifests_round_trip_their_layers() {
        let layer = signature_descriptor(b"payload", "c2ln");
        let bytes = signature_manifest(std::slice::from_ref(&layer));
        let layers = parse_signature_manifest(&bytes).unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0].digest, Digest::of(b"payload"));
        assert_eq!(layers[0].signature_bytes().unwrap(), b"sig");
        let manifest: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(manifest["config"]["digest"], Digest::of(EMPTY_CONFIG).to_string());
    }
}
