//! `os-sign`'s step: sign each record's digest the way `cosign sign --key`
//! does (tag-based storage), appending to an existing `.sig` manifest, and
//! record who signed with which key.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use serde_json::Value;

use crate::azure::CredentialKind;
use crate::oci::digest::Digest;
use crate::oci::reference::RegistryRef;
use crate::oci::registry::RegistryError;
use crate::oci::store::Stores;
use crate::pipeline::{Step, Work};
use crate::record::Origin;
use crate::record::located;
use crate::record::{ErrorCode, Event, Record, field};
use crate::signing::bundle;
use crate::signing::key::{self, KeyError, KeyRef, Password, PublicKey, Signer};
use crate::signing::simple_signing;
use crate::steps::digest as digest_step;

const STEP: &str = "sign";

/// Annotations derived from the record's `source`, so the signature itself
/// links back to the commit (OCI's standard annotation keys).
const SOURCE_ANNOTATIONS: [(&str, &str); 3] = [
    ("commit", "org.opencontainers.image.revision"),
    ("repository", "org.opencontainers.image.source"),
    ("run", "dev.onestream.run"),
];

/// Where a signature is stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Storage {
    /// cosign 2's `sha256-<hex>.sig` tag.
    #[default]
    Tag,
    /// cosign 3's Sigstore bundle as an OCI 1.1 referrer.
    Referrers,
}

impl Storage {
    pub const ALL: [Storage; 2] = [Storage::Tag, Storage::Referrers];

    /// The name `--storage` takes.
    pub fn name(self) -> &'static str {
        match self {
            Storage::Tag => "tag",
            Storage::Referrers => "referrers",
        }
    }

    /// What reads it, for `--help`.
    pub fn help(self) -> &'static str {
        match self {
            Storage::Tag => {
                "cosign 2's `sha256-<hex>.sig` tag (what skopeo, podman and policy-controller read by default)"
            }
            Storage::Referrers => {
                "cosign 3's default: a Sigstore bundle attached as an OCI 1.1 referrer (with the \
                 `sha256-<hex>` tag-fallback index where the registry has no Referrers API)"
            }
        }
    }
}

/// The binary whose step this is.
pub const TOOL: &str = "os-sign";

#[derive(Debug, Clone, Default)]
pub struct SignOptions {
    /// `-a key=value`; they win over the ones derived from `source`.
    pub annotations: BTreeMap<String, String>,
    pub storage: Storage,
}

/// os-sign's step: one key, loaded once, signs every record.
pub struct Signing {
    pub signer: Signer,
    pub options: SignOptions,
}

impl Step for Signing {
    const TOOL: &'static str = TOOL;
    const NAME: &'static str = STEP;

    async fn work(&self, stores: &Stores, origin: Origin, work: Work) -> Record {
        let record = digest_step::record_for(stores, TOOL, origin, work).await;
        if record.is_error() {
            return record;
        }
        sign_record(stores, &self.signer, &self.options, origin, record).await
    }
}

/// `os-sign generate-key-pair`: PREFIX.key (encrypted with
/// [`key::new_key_password`], mode 0600) and PREFIX.pub, never overwritten.
pub fn write_key_pair(prefix: &Path) -> Result<(), KeyError> {
    let (private, public) = (prefix.with_extension("key"), prefix.with_extension("pub"));
    let password = key::new_key_password()?;
    let key_id = key::generate_key_pair(&private, &public, password.as_bytes())?;
    eprintln!("Private key written to {}", private.display());
    eprintln!("Public key written to {} (key id {key_id})", public.display());
    Ok(())
}

/// `os-sign public-key`: the PEM public key of any key source.
pub fn public_key_pem(key: &str, credential: CredentialKind) -> Result<ExportedKey, KeyError> {
    let key: KeyRef = key.parse()?;
    let public =
        crate::pipeline::runtime().block_on(PublicKey::load(&key, &Password::EnvOrPrompt, credential))?;
    let note = public.cosign_verify_flags().map(|flags| {
        format!("cosign verify --key needs {flags} for this key's signatures (cosign assumes sha256 for a key file)")
    });
    Ok(ExportedKey {
        pem: public.to_pem(),
        note,
    })
}

/// `os-sign public-key`'s answer: the PEM for stdout, and what a cosign
/// user must know about the key, for stderr.
pub struct ExportedKey {
    pub pem: String,
    pub note: Option<String>,
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
    let stored = match options.storage {
        Storage::Tag => {
            let payload =
                simple_signing::payload(&simple_signing::docker_reference(&image), &digest, &annotations);
            let signature_ref = image.with_tag(simple_signing::signature_tag(&digest));
            store_signature(stores, signer, &signature_ref, payload)
                .await
                .map(|added| (signature_ref.to_string(), added, None))
                .map_err(|error| (signature_ref.to_string(), error))
        }
        Storage::Referrers => {
            let name = simple_signing::docker_reference(&image);
            let statement = bundle::statement(&name, &digest, &annotations);
            store_bundle(stores, signer, &image, &digest, statement, bundle::SIGN_PREDICATE)
                .await
                .map(|(referrer, added, mechanism)| (referrer, added, Some(mechanism)))
                .map_err(|error| (format!("{image}@{digest} (as a referrer)"), error))
        }
    };
    match stored {
        Ok((signature_ref, added, mechanism)) => {
            let mut event = Event::new(STEP, TOOL)
                .with("signer", signer.reference())
                .with("keyId", signer.key_id())
                .with("signature", signature_ref)
                .with("added", added);
            if let Some(mechanism) = mechanism {
                event = event.with("storage", "referrers").with("referrers", mechanism);
            }
            record.push_event(event);
            record
        }
        Err((signature_ref, error)) => {
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
pub(crate) enum SignError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("the existing signature manifest is malformed: {0}")]
    Existing(String),
    #[error(transparent)]
    Key(#[from] crate::signing::key::KeyError),
}

impl SignError {
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            SignError::Registry(error) => error.into(),
            SignError::Existing(_) => ErrorCode::MalformedSignature,
            SignError::Key(_) => ErrorCode::KeyError,
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
        let existing = simple_signing::parse_signature_manifest(&bytes)
            .map_err(|e| SignError::Existing(e.to_string()))?;
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
    layers.push(simple_signing::signature_descriptor(&payload, &signature));
    let manifest = simple_signing::signature_manifest(&layers);
    registry
        .upload_small_blob(signature_ref, Bytes::from(payload))
        .await?;
    registry
        .push_small_blob_once(signature_ref, Bytes::from_static(simple_signing::EMPTY_CONFIG))
        .await?;
    registry
        .push_manifest(
            signature_ref,
            signature_ref.tag.as_deref(),
            crate::oci::manifest::OCI_MANIFEST,
            Bytes::from(manifest),
        )
        .await?;
    Ok(true)
}

/// Attaches a Sigstore bundle of `statement` (about `digest`, of
/// `predicate_type`: a signature, or an attestation) as an OCI 1.1
/// referrer, unless one already verifies with this key for the same
/// statement. Returns the referrer (`repository@digest`), whether it was
/// added, and which referrer mechanism the registry offered.
pub(crate) async fn store_bundle(
    stores: &Stores,
    signer: &Signer,
    image: &RegistryRef,
    digest: &Digest,
    statement: Vec<u8>,
    predicate_type: &str,
) -> Result<(String, bool, &'static str), SignError> {
    let registry = stores.registry();
    let public = signer.public_key();
    let (existing, listed_by) = registry.referrers(image, digest).await?;
    for entry in existing
        .iter()
        .filter(|entry| bundle::may_be_bundle_of(entry, predicate_type))
    {
        let Some(referrer) = crate::oci::manifest::descriptor_digest(entry) else {
            continue;
        };
        let (manifest, _) = registry
            .fetch_manifest(&image.with_digest(referrer.clone()), Some(&referrer))
            .await?;
        let Some(layer) = bundle::bundle_layer(&manifest) else {
            continue;
        };
        let Ok(envelope) = bundle::parse_bundle(&registry.fetch_blob(image, &layer).await?) else {
            continue;
        };
        let signed = envelope.signed_bytes();
        if envelope.payload == statement && envelope.signatures.iter().any(|s| public.verify(s, &signed)) {
            // Found in a listing, so by the Referrers API or the tag fallback.
            return Ok((format!("{image}@{referrer}"), false, listed_by.label()));
        }
    }
    let signature = signer
        .sign(&bundle::pae(bundle::IN_TOTO_PAYLOAD_TYPE, &statement))
        .await?;
    let key_digest: Digest = signer.key_id().parse().expect("a key id is a sha256 digest");
    let hint = hex::decode(key_digest.hex()).expect("a digest is hex");
    let bundle_bytes = bundle::bundle(&statement, &signature, &hint);
    let (subject_bytes, served_type) = registry
        .fetch_manifest(&image.with_digest(digest.clone()), Some(digest))
        .await?;
    let subject_type = crate::oci::manifest::summarize(&subject_bytes, served_type.as_deref())
        .map_err(|e| SignError::Existing(format!("the signed manifest: {e}")))?
        .media_type;
    let subject = serde_json::json!({
        "mediaType": subject_type,
        "digest": digest.to_string(),
        "size": subject_bytes.len(),
    });
    let annotations = bundle::referrer_annotations(&crate::record::now_rfc3339(), predicate_type);
    let manifest = bundle::referrer_manifest(&subject, &bundle_bytes, &annotations);
    registry
        .upload_small_blob(image, Bytes::from(bundle_bytes))
        .await?;
    registry
        .push_small_blob_once(image, Bytes::from_static(simple_signing::EMPTY_CONFIG))
        .await?;
    let (referrer, mechanism) = registry
        .push_referrer(
            image,
            digest,
            Bytes::from(manifest),
            bundle::BUNDLE_MEDIA_TYPE,
            &annotations,
        )
        .await?;
    Ok((format!("{image}@{referrer}"), true, mechanism.label()))
}
