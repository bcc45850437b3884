//! `os-sign`'s step: sign each record's digest the way `cosign sign --key`
//! does (tag-based storage), appending to an existing `.sig` manifest, and
//! record who signed with which key.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use crate::capture;
use crate::cli::{CommonArgs, RunError};
use crate::digest::Digest;
use crate::key::Signer;
use crate::record::{Event, Record, field};
use crate::reference::RegistryRef;
use crate::registry::RegistryError;
use crate::signature;
use crate::store::{Stores, located};
use crate::stream::{self, Origin};

const STEP: &str = "sign";

/// Annotations derived from the record's `source`, so the signature itself
/// links back to the commit (OCI's standard annotation keys).
const SOURCE_ANNOTATIONS: [(&str, &str); 3] = [
    ("commit", "org.opencontainers.image.revision"),
    ("repository", "org.opencontainers.image.source"),
    ("run", "dev.onestream.run"),
];

#[derive(Debug, Clone, Default)]
pub struct SignOptions {
    /// `-a key=value`; they win over the ones derived from `source`.
    pub annotations: BTreeMap<String, String>,
    /// `os-sign 0.1.0`.
    pub tool: String,
}

pub fn run(
    signer: Signer,
    options: SignOptions,
    common: &CommonArgs,
    references: Vec<String>,
    stdin: impl BufRead + Send + 'static,
    stdout: &mut impl Write,
) -> Result<u8, RunError> {
    let (signer, options) = (Arc::new(signer), Arc::new(options));
    stream::run_tool(common, references, stdin, stdout, "os-sign", STEP, |stores| {
        move |origin, work| {
            let (stores, signer, options) = (stores.clone(), signer.clone(), options.clone());
            async move {
                let record = capture::record_for(&stores, &options.tool, origin, work).await;
                if record.is_error() {
                    return record;
                }
                sign_record(&stores, &signer, &options, origin, record).await
            }
        }
    })
}

async fn sign_record(
    stores: &Stores,
    signer: &Signer,
    options: &SignOptions,
    origin: Origin,
    mut record: Record,
) -> Record {
    let (image, digest) = match located(&record, origin, STEP) {
        Ok(found) => found,
        Err(failed) => return failed,
    };
    let mut annotations = BTreeMap::new();
    if let Some(Value::Object(source)) = record.fields().get(field::SOURCE) {
        for (name, annotation) in SOURCE_ANNOTATIONS {
            if let Some(value) = source.get(name).and_then(Value::as_str) {
                annotations.insert(annotation.to_string(), value.to_string());
            }
        }
    }
    annotations.extend(options.annotations.clone());
    let payload = signature::payload(&signature::docker_reference(&image), &digest, &annotations);
    let signature_ref = image.with_tag(signature::signature_tag(&digest));
    match store_signature(stores, signer, &signature_ref, payload).await {
        Ok(added) => {
            record.push_event(
                Event::new(STEP, &options.tool)
                    .with("signer", signer.reference())
                    .with("keyId", signer.key_id())
                    .with("signature", signature_ref.to_string())
                    .with("added", added),
            );
            record
        }
        Err(error) => {
            record.fail(
                STEP,
                error.code(),
                format!("{origin}: storing the signature at {signature_ref}: {error}"),
            );
            record
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum SignError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("the existing signature manifest is malformed: {0}")]
    Existing(String),
    #[error(transparent)]
    Key(#[from] crate::key::KeyError),
}

impl SignError {
    fn code(&self) -> &'static str {
        match self {
            SignError::Registry(error) => error.code(),
            SignError::Existing(_) => "malformed-signature",
            SignError::Key(_) => "key-error",
        }
    }
}

/// Appends a signature layer to the `.sig` manifest (creating it), unless a
/// layer with the same payload already verifies with this key. Returns
/// whether a signature was added. Blobs go up before the manifest.
async fn store_signature(
    stores: &Stores,
    signer: &Signer,
    signature_ref: &RegistryRef,
    payload: Vec<u8>,
) -> Result<bool, SignError> {
    let registry = stores.registry();
    let payload_digest = Digest::of(&payload);
    let mut layers: Vec<Value> = Vec::new();
    if let Some((bytes, _)) = registry.fetch_manifest_if_any(signature_ref).await? {
        let existing =
            signature::parse_signature_manifest(&bytes).map_err(|e| SignError::Existing(e.to_string()))?;
        let public = signer.public_key();
        let already = existing.iter().any(|layer| {
            layer.digest == payload_digest
                && layer
                    .signature_bytes()
                    .is_some_and(|signature| public.verify(&signature, &payload))
        });
        if already {
            return Ok(false);
        }
        layers = existing.into_iter().map(|layer| layer.descriptor).collect();
    }
    use base64::Engine as _;
    let signature = base64::engine::general_purpose::STANDARD.encode(signer.sign(&payload).await?);
    layers.push(signature::signature_descriptor(&payload, &signature));
    let manifest = signature::signature_manifest(&layers);
    registry
        .upload_small_blob(signature_ref, Bytes::from(payload))
        .await?;
    registry
        .push_small_blob_once(signature_ref, Bytes::from_static(signature::EMPTY_CONFIG))
        .await?;
    registry
        .push_manifest(
            signature_ref,
            signature_ref.tag.as_deref(),
            crate::manifest::OCI_MANIFEST,
            Bytes::from(manifest),
        )
        .await?;
    Ok(true)
}
