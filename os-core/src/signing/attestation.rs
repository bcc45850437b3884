//! In-toto attestations as `cosign attest --key` writes them (cosign 2.5):
//! an in-toto statement (v0.1) about the image digest, signed in a DSSE
//! envelope, stored as a layer of the `sha256-<hex>.att` manifest with its
//! predicate type in the layer's `predicateType` annotation.
//!
//! `--type` takes cosign's names for the predicate types
//! (`cmd/cosign/cli/options/predicate.go` in cosign 2.5) or any URI.

use base64::Engine as _;
use chrono::SecondsFormat;
use serde_json::{Value, json};

use crate::oci::digest::Digest;
use crate::signing::bundle::{self, Envelope, IN_TOTO_PAYLOAD_TYPE};
use crate::signing::simple_signing::SIGNATURE_ANNOTATION;

/// The media type of an `.att` layer.
pub const DSSE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
/// The `.att` layer annotation that names the predicate type.
pub const PREDICATE_TYPE_ANNOTATION: &str = "predicateType";
/// What `cosign attest` (2.5) writes as the statement's `_type`.
const STATEMENT_V01: &str = "https://in-toto.io/Statement/v0.1";
/// SLSA provenance v1.
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
/// cosign's `vuln` predicate type.
pub const VULN_PREDICATE: &str = "https://cosign.sigstore.dev/attestation/vuln/v1";
/// cosign's `custom` predicate type.
pub const CUSTOM_PREDICATE: &str = "https://cosign.sigstore.dev/attestation/v1";

/// cosign's `--type` names and the predicate types they stand for.
pub const PREDICATE_TYPES: [(&str, &str); 10] = [
    ("custom", CUSTOM_PREDICATE),
    ("slsaprovenance", "https://slsa.dev/provenance/v0.2"),
    ("slsaprovenance02", "https://slsa.dev/provenance/v0.2"),
    ("slsaprovenance1", SLSA_PROVENANCE_V1),
    ("spdx", "https://spdx.dev/Document"),
    ("spdxjson", "https://spdx.dev/Document"),
    ("cyclonedx", "https://cyclonedx.org/bom"),
    ("link", "https://in-toto.io/Link/v1"),
    ("vuln", VULN_PREDICATE),
    ("openvex", "https://openvex.dev/ns"),
];

#[derive(Debug, thiserror::Error)]
pub enum AttestationError {
    #[error(
        "--type {name:?}: not one of cosign's predicate types ({}) nor a URI",
        PREDICATE_TYPES.iter().map(|(known, _)| *known).collect::<Vec<_>>().join(", ")
    )]
    UnknownType { name: String },
    #[error("--predicate {path}: {detail}")]
    Predicate { path: String, detail: String },
}

/// The predicate type `--type` names: one of cosign's names, or a URI.
pub fn predicate_type(name: &str) -> Result<String, AttestationError> {
    if let Some((_, uri)) = PREDICATE_TYPES.iter().find(|(known, _)| *known == name) {
        return Ok(uri.to_string());
    }
    match url::Url::parse(name) {
        Ok(url) if url.has_host() => Ok(name.to_string()),
        _ => Err(AttestationError::UnknownType {
            name: name.to_string(),
        }),
    }
}

/// The predicate from a file's bytes: JSON as it is, but for cosign's
/// `custom` type, which wraps the file's text with a timestamp.
pub fn predicate(predicate_type: &str, path: &str, bytes: &[u8]) -> Result<Value, AttestationError> {
    if predicate_type == CUSTOM_PREDICATE {
        let text = String::from_utf8(bytes.to_vec()).map_err(|_| AttestationError::Predicate {
            path: path.into(),
            detail: "not UTF-8 text".into(),
        })?;
        let now = chrono::Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        return Ok(json!({"Data": text, "Timestamp": now}));
    }
    serde_json::from_slice(bytes).map_err(|e| AttestationError::Predicate {
        path: path.into(),
        detail: format!("not JSON: {e}"),
    })
}

/// The statement `cosign attest` signs: the image (its repository, as
/// cosign names it) by digest, the predicate type and the predicate.
pub fn statement(name: &str, digest: &Digest, predicate_type: &str, predicate: &Value) -> Vec<u8> {
    let statement = json!({
        "_type": STATEMENT_V01,
        "predicateType": predicate_type,
        "subject": [{"name": name, "digest": {"sha256": digest.hex()}}],
        "predicate": predicate,
    });
    serde_json::to_vec(&statement).expect("a JSON value serialises")
}

/// The DSSE envelope holding `statement` and its signature (over
/// [`bundle::pae`]); cosign writes an empty `keyid`.
pub fn envelope(statement: &[u8], signature: &[u8]) -> Vec<u8> {
    let base64 = base64::engine::general_purpose::STANDARD;
    let envelope = json!({
        "payloadType": IN_TOTO_PAYLOAD_TYPE,
        "payload": base64.encode(statement),
        "signatures": [{"keyid": "", "sig": base64.encode(signature)}],
    });
    serde_json::to_vec(&envelope).expect("a JSON value serialises")
}

/// What the signature of an envelope is over.
pub fn signed_bytes(statement: &[u8]) -> Vec<u8> {
    bundle::pae(IN_TOTO_PAYLOAD_TYPE, statement)
}

/// The `.att` layer descriptor of an envelope.
pub fn layer(envelope: &[u8], predicate_type: &str) -> Value {
    json!({
        "mediaType": DSSE_MEDIA_TYPE,
        "size": envelope.len(),
        "digest": Digest::of(envelope).to_string(),
        "annotations": {SIGNATURE_ANNOTATION: "", PREDICATE_TYPE_ANNOTATION: predicate_type},
    })
}

/// An `.att` layer descriptor's digest and predicate type annotation,
/// when it is a DSSE envelope.
pub fn layer_of(descriptor: &Value) -> Option<(Digest, Option<String>)> {
    if descriptor.get("mediaType").and_then(Value::as_str) != Some(DSSE_MEDIA_TYPE) {
        return None;
    }
    let digest = descriptor.get("digest")?.as_str()?.parse().ok()?;
    let predicate_type = descriptor
        .pointer(&format!("/annotations/{PREDICATE_TYPE_ANNOTATION}"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Some((digest, predicate_type))
}

/// An envelope's bytes, parsed; `None` when they are not a DSSE envelope of
/// an in-toto statement.
pub fn parse(bytes: &[u8]) -> Option<Envelope> {
    bundle::parse_envelope(bytes)
        .ok()
        .filter(|envelope| envelope.payload_type == IN_TOTO_PAYLOAD_TYPE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosign_names_and_uris_both_name_predicate_types() {
        assert_eq!(
            predicate_type("vuln").unwrap(),
            "https://cosign.sigstore.dev/attestation/vuln/v1"
        );
        assert_eq!(
            predicate_type("slsaprovenance1").unwrap(),
            "https://slsa.dev/provenance/v1"
        );
        assert_eq!(
            predicate_type("https://example.com/review/v1").unwrap(),
            "https://example.com/review/v1"
        );
        assert!(predicate_type("sbom").is_err());
        assert!(predicate_type("urn:x").is_err());
    }
}
