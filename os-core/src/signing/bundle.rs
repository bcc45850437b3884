//! Sigstore bundles (v0.3) holding a DSSE-signed in-toto statement: how
//! cosign 3 stores an image signature by default, attached to the image as
//! an OCI 1.1 referrer (cosign's `specs/BUNDLE_SPEC.md`).
//!
//! The statement's predicate type `https://sigstore.dev/cosign/sign/v1`
//! marks it as a signature (not an attestation); its subject is the image
//! digest, with the signer's annotations on the subject, as cosign 3 writes
//! them. Bundles made with a key carry no transparency-log entry: the key
//! is the trust root, as with `cosign sign --key --tlog-upload=false`.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::oci::digest::Digest;
use crate::oci::manifest;
use crate::signing::simple_signing::{EMPTY_CONFIG, EMPTY_CONFIG_TYPE};

pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// cosign 2.5 stores the artifact type in the config descriptor and so its
/// tag-fallback index lists bundles under the empty config's type.
pub const EMPTY_ARTIFACT_TYPE: &str = EMPTY_CONFIG_TYPE;
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The predicate type cosign 3 gives image signatures.
pub const SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
pub const CONTENT_ANNOTATION: &str = "dev.sigstore.bundle.content";
pub const PREDICATE_ANNOTATION: &str = "dev.sigstore.bundle.predicateType";
const CREATED_ANNOTATION: &str = "org.opencontainers.image.created";

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The in-toto statement cosign 3 signs for an image: subject = the
/// manifest digest (named by its repository, which cosign 3 leaves out and
/// `os-verify` checks when present), annotations on the subject.
pub fn statement(name: &str, digest: &Digest, annotations: &BTreeMap<String, String>) -> Vec<u8> {
    let statement = json!({
        "_type": STATEMENT_V1,
        "subject": [{
            "name": name,
            "digest": {"sha256": digest.hex()},
            "annotations": annotations,
        }],
        "predicateType": SIGN_PREDICATE,
        "predicate": {},
    });
    serde_json::to_vec(&statement).expect("a JSON value serialises")
}

/// DSSE's pre-authentication encoding: what the signature is over.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut encoded = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    encoded.extend_from_slice(payload);
    encoded
}

/// The bundle JSON: the public key's hint (base64 of the SHA-256 of its
/// DER, as cosign writes it), no log entries, the DSSE envelope.
pub fn bundle(statement: &[u8], signature: &[u8], public_key_der_sha256: &[u8]) -> Vec<u8> {
    let bundle = json!({
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {
            "publicKey": {"hint": BASE64.encode(public_key_der_sha256)},
            "tlogEntries": [],
        },
        "dsseEnvelope": {
            "payload": BASE64.encode(statement),
            "payloadType": IN_TOTO_PAYLOAD_TYPE,
            "signatures": [{"sig": BASE64.encode(signature)}],
        },
    });
    serde_json::to_vec(&bundle).expect("a JSON value serialises")
}

/// The annotations that let a reader tell a signature bundle from other
/// referrers without fetching it (also copied into the tag-fallback index).
pub fn referrer_annotations(created: &str, predicate_type: &str) -> Map<String, Value> {
    let mut annotations = Map::new();
    annotations.insert(CONTENT_ANNOTATION.into(), "dsse-envelope".into());
    annotations.insert(PREDICATE_ANNOTATION.into(), predicate_type.into());
    annotations.insert(CREATED_ANNOTATION.into(), created.into());
    annotations
}

/// The referrer manifest: empty config, the bundle as its one layer,
/// `subject` = the signed image.
pub fn referrer_manifest(subject: &Value, bundle: &[u8], annotations: &Map<String, Value>) -> Vec<u8> {
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_MANIFEST,
        "artifactType": BUNDLE_MEDIA_TYPE,
        "config": {
            "mediaType": EMPTY_CONFIG_TYPE,
            "digest": Digest::of(EMPTY_CONFIG).to_string(),
            "size": EMPTY_CONFIG.len(),
        },
        "layers": [{
            "mediaType": BUNDLE_MEDIA_TYPE,
            "digest": Digest::of(bundle).to_string(),
            "size": bundle.len(),
        }],
        "subject": subject,
        "annotations": annotations,
    });
    serde_json::to_vec(&manifest).expect("a JSON value serialises")
}

/// Whether a referrers-index entry may be a signature bundle, judged
/// without fetching it.
pub fn may_be_bundle(entry: &Value) -> bool {
    may_be_bundle_of(entry, SIGN_PREDICATE)
}

/// Whether a referrers-index entry may be a bundle of `predicate_type`
/// (cosign 2.5's fallback index lists bundles without the annotation, so
/// those may be too).
pub fn may_be_bundle_of(entry: &Value, predicate_type: &str) -> bool {
    let artifact_type = entry.get("artifactType").and_then(Value::as_str);
    let predicate = entry
        .get("annotations")
        .and_then(|a| a.get(PREDICATE_ANNOTATION))
        .and_then(Value::as_str);
    match predicate {
        Some(predicate) => predicate == predicate_type,
        None => matches!(artifact_type, Some(BUNDLE_MEDIA_TYPE | EMPTY_ARTIFACT_TYPE)),
    }
}

/// The bundle layer of a referrer manifest, if it is a bundle.
pub fn bundle_layer(manifest: &[u8]) -> Option<Digest> {
    let manifest: Value = serde_json::from_slice(manifest).ok()?;
    manifest
        .get("layers")?
        .as_array()?
        .iter()
        .find(|layer| layer.get("mediaType").and_then(Value::as_str) == Some(BUNDLE_MEDIA_TYPE))?
        .get("digest")?
        .as_str()?
        .parse()
        .ok()
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("not a Sigstore bundle: {0}")]
    Json(String),
    #[error("the bundle holds no DSSE envelope (a message signature is not an image signature)")]
    NoEnvelope,
    #[error("the bundle's {0} is not valid base64")]
    Base64(&'static str),
    #[error("the signed statement is not an in-toto statement: {0}")]
    Statement(String),
}

/// A DSSE envelope, decoded.
pub struct Envelope {
    pub payload_type: String,
    pub payload: Vec<u8>,
    pub signatures: Vec<Vec<u8>>,
}

impl Envelope {
    /// The bytes each signature is over.
    pub fn signed_bytes(&self) -> Vec<u8> {
        pae(&self.payload_type, &self.payload)
    }
}

pub fn parse_bundle(bytes: &[u8]) -> Result<Envelope, BundleError> {
    let bundle: Value = serde_json::from_slice(bytes).map_err(|e| BundleError::Json(e.to_string()))?;
    let media_type = bundle
        .get("mediaType")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !media_type.starts_with("application/vnd.dev.sigstore.bundle") {
        return Err(BundleError::Json(format!("mediaType is {media_type:?}")));
    }
    let envelope = bundle.get("dsseEnvelope").ok_or(BundleError::NoEnvelope)?;
    envelope_of(envelope)
}

/// A bare DSSE envelope (`{"payloadType","payload","signatures"}`), as a
/// cosign `.att` layer holds one.
pub fn parse_envelope(bytes: &[u8]) -> Result<Envelope, BundleError> {
    let envelope: Value = serde_json::from_slice(bytes).map_err(|e| BundleError::Json(e.to_string()))?;
    envelope_of(&envelope)
}

fn envelope_of(envelope: &Value) -> Result<Envelope, BundleError> {
    let text = |field: &str| envelope.get(field).and_then(Value::as_str).unwrap_or_default();
    let payload = BASE64
        .decode(text("payload"))
        .map_err(|_| BundleError::Base64("payload"))?;
    let signatures = envelope
        .get("signatures")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|s| {
            BASE64
                .decode(s.get("sig").and_then(Value::as_str).unwrap_or_default())
                .map_err(|_| BundleError::Base64("signature"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Envelope {
        payload_type: text("payloadType").to_string(),
        payload,
        signatures,
    })
}

/// What a signed statement says.
pub struct Statement {
    pub predicate_type: String,
    /// `(name, sha256 hex)` of each subject.
    pub subjects: Vec<(Option<String>, Option<String>)>,
    /// The first subject's annotations (cosign 3 writes `-a` there).
    pub annotations: Map<String, Value>,
    pub predicate: Value,
}

pub fn parse_statement(bytes: &[u8]) -> Result<Statement, BundleError> {
    let statement: Value =
        serde_json::from_slice(bytes).map_err(|e| BundleError::Statement(e.to_string()))?;
    let kind = statement.get("_type").and_then(Value::as_str).unwrap_or_default();
    if !kind.starts_with("https://in-toto.io/Statement/") {
        return Err(BundleError::Statement(format!("_type is {kind:?}")));
    }
    let subjects: Vec<&Value> = statement
        .get("subject")
        .and_then(Value::as_array)
        .map(|s| s.iter().collect())
        .unwrap_or_default();
    Ok(Statement {
        predicate: statement.get("predicate").cloned().unwrap_or(Value::Null),
        predicate_type: statement
            .get("predicateType")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        annotations: subjects
            .first()
            .and_then(|s| s.get("annotations"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        subjects: subjects
            .iter()
            .map(|s| {
                let field = |path: &str| s.pointer(path).and_then(Value::as_str).map(str::to_string);
                (field("/name"), field("/digest/sha256"))
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_is_dsse_v1() {
        // The example from the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn a_bundle_round_trips_and_names_its_subject() {
        let digest: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        let annotations = BTreeMap::from([("team".to_string(), "iam".to_string())]);
        let statement_bytes = statement("registry.example/app", &digest, &annotations);
        let bytes = bundle(&statement_bytes, b"sig", &[7; 32]);
        let envelope = parse_bundle(&bytes).unwrap();
        assert_eq!(envelope.payload, statement_bytes);
        assert_eq!(envelope.signatures, vec![b"sig".to_vec()]);
        assert!(
            envelope
                .signed_bytes()
                .starts_with(b"DSSEv1 28 application/vnd.in-toto+json ")
        );
        let parsed = parse_statement(&envelope.payload).unwrap();
        assert_eq!(parsed.predicate_type, SIGN_PREDICATE);
        assert_eq!(
            parsed.subjects,
            vec![(Some("registry.example/app".into()), Some("ab".repeat(32)))]
        );
        assert_eq!(parsed.annotations["team"], "iam");
    }

    #[test]
    fn message_signature_bundles_and_foreign_json_are_refused() {
        let message =
            br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","messageSignature":{}}"#;
        assert!(matches!(parse_bundle(message), Err(BundleError::NoEnvelope)));
        assert!(parse_bundle(br#"{"mediaType":"text/plain"}"#).is_err());
        assert!(parse_statement(br#"{"_type":"something-else"}"#).is_err());
    }
}
