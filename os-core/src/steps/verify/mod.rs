//! `os-verify`'s step: find the cosign signatures of each record's digest at
//! its current `image`, and pass the record on only if one of them verifies
//! with a given key, signs this digest, names an acceptable identity and
//! carries the required annotations. Nothing the registry says is trusted:
//! the signature manifest and each payload are checked against their
//! digests before use.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::oci::digest::Digest;
use crate::oci::layout::{Layout, LayoutError};
use crate::oci::reference::{ImageRef, RegistryRef};
use crate::oci::registry::RegistryError;
use crate::oci::store::{Place, StoreError, Stores};
use crate::pipeline::{Step, Work};
use crate::record::Origin;
use crate::record::located;
use crate::record::{ErrorCode, Event, Record, field};
use crate::signing::bundle;
use crate::signing::key::PublicKey;
use crate::signing::simple_signing::{self, SIMPLE_SIGNING};

const STEP: &str = "verify";

/// The binary whose step this is.
pub const TOOL: &str = "os-verify";

/// How the signed `docker-reference` must relate to where the image is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    Exact,
    Repository,
    Any,
}

impl Identity {
    pub const ALL: [Identity; 3] = [Identity::Exact, Identity::Repository, Identity::Any];

    /// The name `--identity` takes.
    pub fn name(self) -> &'static str {
        match self {
            Identity::Exact => "exact",
            Identity::Repository => "repository",
            Identity::Any => "any",
        }
    }

    /// What must match, for `--help`.
    pub fn help(self) -> &'static str {
        match self {
            Identity::Exact => "Registry and repository equal",
            Identity::Repository => "Repository path equal, any registry (what promotion keeps)",
            Identity::Any => "Not checked (what `cosign verify` does)",
        }
    }
}

pub struct VerifyPolicy {
    pub keys: Vec<PublicKey>,
    pub identity: Identity,
    /// `FROM=TO` prefixes applied to the signed reference before comparing.
    pub remaps: Vec<(String, String)>,
    /// Annotations every accepted signature must carry.
    pub annotations: BTreeMap<String, String>,
    /// Where signatures are read from (`--offline DIR`: a layout).
    pub source: SignatureSource,
}

/// Why a record failed verification, as a stable code; ordered by how far
/// a signature got, so the most telling reason is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    RegistryError,
    NoSignature,
    MalformedSignature,
    KeyMismatch,
    DigestMismatch,
    IdentityMismatch,
    AnnotationMismatch,
}

impl From<Reason> for ErrorCode {
    fn from(reason: Reason) -> ErrorCode {
        match reason {
            Reason::RegistryError => ErrorCode::RegistryError,
            Reason::NoSignature => ErrorCode::NoSignature,
            Reason::MalformedSignature => ErrorCode::MalformedSignature,
            Reason::KeyMismatch => ErrorCode::KeyMismatch,
            Reason::DigestMismatch => ErrorCode::DigestMismatch,
            Reason::IdentityMismatch => ErrorCode::IdentityMismatch,
            Reason::AnnotationMismatch => ErrorCode::AnnotationMismatch,
        }
    }
}

/// A signature that passed every check.
#[derive(Debug)]
pub struct Accepted {
    pub key_id: String,
    pub payload_digest: Digest,
    pub identity: String,
    /// The referrer manifest that held it, for a Sigstore bundle (cosign 3);
    /// `None` for a `.sig` layer.
    pub bundle_referrer: Option<Digest>,
}

/// os-verify's step: every record checked against one policy.
pub struct Verification(pub VerifyPolicy);

impl Step for Verification {
    const TOOL: &'static str = TOOL;
    const NAME: &'static str = STEP;

    async fn work(&self, stores: &Stores, origin: Origin, work: Work) -> Record {
        let record = match work {
            Work::Record(record) => record,
            Work::Reference(text) => ad_hoc_record(&text, origin),
        };
        if record.is_error() {
            return record;
        }
        verify_record(stores, &self.0, origin, record).await
    }
}

/// `os-verify --key k.pub reg/app@sha256:…`: a record from a pinned
/// reference (or an error record). Verification is by digest only: a tag
/// would be a claim we cannot check.
fn ad_hoc_record(text: &str, origin: Origin) -> Record {
    let mut record = Record::new();
    let reference: RegistryRef = match text.parse() {
        Ok(reference) => reference,
        Err(error) => {
            record.set(field::REFERENCE, text);
            record.fail(STEP, ErrorCode::BadReference, format!("{origin}: {error}"));
            return record;
        }
    };
    let Some(digest) = &reference.digest else {
        record.set(field::REFERENCE, text);
        record.fail(
            STEP,
            ErrorCode::BadReference,
            format!("{origin}: {text} has no digest: verify REPOSITORY@sha256:… (os-digest resolves tags)"),
        );
        return record;
    };
    record.set(field::IMAGE, reference.name());
    record.set(field::DIGEST, digest.to_string());
    if let Some(tag) = &reference.tag {
        record.set(field::TAG, tag.clone());
    }
    record
}

async fn verify_record(stores: &Stores, policy: &VerifyPolicy, origin: Origin, mut record: Record) -> Record {
    // `verified_at` is where it was verified: the layout, for a record
    // os-import moved into the --offline layout.
    let (image, digest, verified_at) = match signed_location(&record, &policy.source) {
        Some((image, digest)) => {
            let layout = record.image().unwrap_or_default().to_string();
            (image, digest, layout)
        }
        None => match located(&record, origin, STEP) {
            Ok((image, digest)) => {
                let name = image.name();
                (image, digest, name)
            }
            Err(failed) => return failed,
        },
    };
    match find_accepted(stores, &policy.source.place(&image), policy, &image, &digest).await {
        Ok(accepted) => {
            record.push_event(
                Event::new(STEP, TOOL)
                    .with("image", verified_at)
                    // What was verified, in its own field: a referrer's
                    // `signature` (`repository@sha256:…`) does not name it.
                    .with("digest", digest.to_string())
                    .with("keyId", accepted.key_id)
                    .with(
                        "signature",
                        match &accepted.bundle_referrer {
                            Some(referrer) => format!("{}@{referrer}", image.name()),
                            None => format!(
                                "{}@{}",
                                image.with_tag(simple_signing::signature_tag(&digest)),
                                accepted.payload_digest
                            ),
                        },
                    )
                    .with("identity", accepted.identity)
                    .with("verified", true),
            );
            record
        }
        Err((reason, message)) => {
            record.fail(
                STEP,
                reason.into(),
                format!("{origin}: {image}@{digest}: {message}"),
            );
            record
        }
    }
}

/// With `--offline DIR`, a record that `os-import --to oci:DIR` moved into
/// that layout: its signatures were made in the registry it came from (the
/// import event's `from`), which is the identity they name.
fn signed_location(record: &Record, source: &SignatureSource) -> Option<(RegistryRef, Digest)> {
    let SignatureSource::Layout(_) = source else {
        return None;
    };
    let image = record.image()?;
    if !image.starts_with("oci:") {
        return None;
    }
    let from = record.history().iter().rev().find_map(|event| {
        let is_import = event.get("step").and_then(Value::as_str) == Some("import")
            && event.get("to").and_then(Value::as_str) == Some(image);
        is_import.then(|| event.get("from")?.as_str())?
    })?;
    match from.parse::<ImageRef>().ok()? {
        ImageRef::Registry(repository) => Some((repository.with(None), record.digest().ok()??)),
        ImageRef::Layout(_) => None,
    }
}

/// The artifact type cosign gives signatures stored as OCI 1.1 referrers.
const COSIGN_SIGNATURE_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";

/// Where a record's signatures are read from: its registry, or an OCI
/// layout (`--offline DIR`, e.g. what an air-gapped site received).
pub enum SignatureSource {
    Registry,
    Layout(Arc<Layout>),
}

/// A failure to read, as a reason: content that does not match its digest
/// is a tampered signature, anything else a store error.
fn read_failure(what: &str, error: StoreError) -> (Reason, String) {
    let tampered = matches!(
        error,
        StoreError::Registry(RegistryError::DigestMismatch { .. })
            | StoreError::Layout(LayoutError::Corrupt { .. } | LayoutError::DigestMismatch { .. })
    );
    if tampered {
        (Reason::MalformedSignature, format!("tampered {what}: {error}"))
    } else {
        (Reason::RegistryError, error.to_string())
    }
}

impl SignatureSource {
    /// Where `image`'s signatures are read.
    fn place(&self, image: &RegistryRef) -> Place {
        match self {
            SignatureSource::Registry => Place::Registry(image.clone()),
            SignatureSource::Layout(layout) => Place::Layout(layout.clone()),
        }
    }
}

/// Checks every signature layer of one signature manifest; `note` keeps
/// the most telling failure.
async fn check_manifest(
    stores: &Stores,
    source: &Place,
    policy: &VerifyPolicy,
    image: &RegistryRef,
    digest: &Digest,
    manifest: &[u8],
    note: &mut impl FnMut(Reason, String),
) -> Option<Accepted> {
    let layers = match simple_signing::parse_signature_manifest(manifest) {
        Ok(layers) => layers,
        Err(error) => {
            note(Reason::MalformedSignature, error.to_string());
            return None;
        }
    };
    for layer in layers.iter().filter(|l| l.media_type == SIMPLE_SIGNING) {
        let payload = match source.blob(stores, &layer.digest).await {
            Ok(payload) => payload,
            Err(error) => {
                let (reason, message) = read_failure("payload", error);
                note(reason, message);
                continue;
            }
        };
        match check_signature(
            policy,
            image,
            digest,
            &layer.media_type,
            &payload,
            layer.signature.as_deref(),
        ) {
            Ok(accepted) => return Some(accepted),
            Err((reason, message)) => note(reason, message),
        }
    }
    None
}

async fn find_accepted(
    stores: &Stores,
    source: &Place,
    policy: &VerifyPolicy,
    image: &RegistryRef,
    digest: &Digest,
) -> Result<Accepted, (Reason, String)> {
    let mut worst: Option<(Reason, String)> = None;
    let mut note = |reason: Reason, message: String| {
        if worst.as_ref().is_none_or(|(r, _)| reason > *r) {
            worst = Some((reason, message));
        }
    };
    // cosign's tag scheme first (what cosign 2 writes by default)...
    let tag = simple_signing::signature_tag(digest);
    match source.tagged(stores, &tag).await {
        Ok(Some(bytes)) => {
            if let Some(accepted) =
                check_manifest(stores, source, policy, image, digest, &bytes, &mut note).await
            {
                return Ok(accepted);
            }
        }
        Ok(None) => note(
            Reason::NoSignature,
            format!("no signature (no {tag}, no OCI 1.1 referrer)"),
        ),
        Err(error) => {
            let (reason, message) = read_failure("signature manifest", error);
            note(reason, message);
        }
    }
    // ...then OCI 1.1 referrers (cosign --registry-referrers-mode=oci-1-1).
    match source.referrers(stores, digest).await {
        Ok(listing) => {
            for entry in listing.entries {
                let is_signature =
                    entry.get("artifactType").and_then(Value::as_str) == Some(COSIGN_SIGNATURE_ARTIFACT);
                let is_bundle = bundle::may_be_bundle(&entry);
                let referrer = crate::oci::manifest::descriptor_digest(&entry);
                let Some(referrer) = referrer.filter(|_| is_signature || is_bundle) else {
                    continue;
                };
                let bytes = match source.manifest(stores, &referrer).await {
                    Ok(bytes) => bytes,
                    Err(error) => {
                        let (reason, message) = read_failure("referrer", error);
                        note(reason, message);
                        continue;
                    }
                };
                if is_signature {
                    if let Some(accepted) =
                        check_manifest(stores, source, policy, image, digest, &bytes, &mut note).await
                    {
                        return Ok(accepted);
                    }
                    continue;
                }
                // A Sigstore bundle (cosign 3, os-sign --storage referrers).
                let Some(layer) = bundle::bundle_layer(&bytes) else {
                    continue;
                };
                match source.blob(stores, &layer).await {
                    Ok(bundle_bytes) => match check_bundle(policy, image, digest, &bundle_bytes) {
                        Ok(accepted) => {
                            return Ok(Accepted {
                                bundle_referrer: Some(referrer),
                                ..accepted
                            });
                        }
                        Err((reason, message)) => note(reason, message),
                    },
                    Err(error) => {
                        let (reason, message) = read_failure("bundle", error);
                        note(reason, message);
                    }
                }
            }
        }
        Err(error) => {
            let (reason, message) = read_failure("referrers", error);
            note(reason, message);
        }
    }
    Err(worst.unwrap_or((
        Reason::NoSignature,
        "the signature manifest holds no cosign signature".into(),
    )))
}

/// Checks one signature (a `.sig` layer's media type, payload bytes and
/// base64 signature annotation) against the policy, for the image at
/// `image` with `digest`. Pure: no I/O, so the interop vectors test it
/// directly.
pub fn check_signature(
    policy: &VerifyPolicy,
    image: &RegistryRef,
    digest: &Digest,
    media_type: &str,
    payload: &[u8],
    signature_base64: Option<&str>,
) -> Result<Accepted, (Reason, String)> {
    if media_type != SIMPLE_SIGNING {
        return Err((
            Reason::NoSignature,
            format!("a {media_type} layer is not a cosign signature"),
        ));
    }
    let signature = signature_base64.and_then(|text| {
        use base64::Engine as _;
        let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        base64::engine::general_purpose::STANDARD.decode(text).ok()
    });
    let Some(signature) = signature else {
        return Err((
            Reason::MalformedSignature,
            "signature annotation missing or not base64".into(),
        ));
    };
    let Some(key) = policy.keys.iter().find(|key| key.verify(&signature, payload)) else {
        return Err((
            Reason::KeyMismatch,
            "no signature verifies with the given key(s)".into(),
        ));
    };
    let parsed = simple_signing::parse_payload(payload)
        .map_err(|e| (Reason::MalformedSignature, format!("signed payload: {e}")))?;
    if parsed.manifest_digest != digest.to_string() {
        return Err((
            Reason::DigestMismatch,
            format!("the signature is for {}, not this digest", parsed.manifest_digest),
        ));
    }
    check_identity(policy, image, &parsed.docker_reference).map_err(|m| (Reason::IdentityMismatch, m))?;
    if let Some(message) = missing_annotation(&policy.annotations, &parsed.optional) {
        return Err((Reason::AnnotationMismatch, message));
    }
    Ok(Accepted {
        key_id: key.key_id(),
        payload_digest: Digest::of(payload),
        identity: parsed.docker_reference,
        bundle_referrer: None,
    })
}

/// Checks one Sigstore bundle (cosign 3's image signature: a DSSE-signed
/// in-toto statement of type `https://sigstore.dev/cosign/sign/v1`)
/// against the policy. Pure, like [`check_signature`]. The statement's
/// subject name, when present, is the signed identity; cosign 3 leaves it
/// out, and then only the digest binds the signature to the image.
pub fn check_bundle(
    policy: &VerifyPolicy,
    image: &RegistryRef,
    digest: &Digest,
    bundle_bytes: &[u8],
) -> Result<Accepted, (Reason, String)> {
    let envelope =
        bundle::parse_bundle(bundle_bytes).map_err(|e| (Reason::MalformedSignature, e.to_string()))?;
    if envelope.payload_type != bundle::IN_TOTO_PAYLOAD_TYPE {
        return Err((
            Reason::NoSignature,
            format!("a bundle of {} is not an image signature", envelope.payload_type),
        ));
    }
    let signed = envelope.signed_bytes();
    let key = policy
        .keys
        .iter()
        .find(|key| envelope.signatures.iter().any(|s| key.verify(s, &signed)))
        .ok_or_else(|| {
            (
                Reason::KeyMismatch,
                "no bundle signature verifies with the given key(s)".to_string(),
            )
        })?;
    let statement = bundle::parse_statement(&envelope.payload)
        .map_err(|e| (Reason::MalformedSignature, e.to_string()))?;
    if statement.predicate_type != bundle::SIGN_PREDICATE {
        return Err((
            Reason::NoSignature,
            format!(
                "an attestation of type {} is not an image signature",
                statement.predicate_type
            ),
        ));
    }
    let Some((name, _)) = statement
        .subjects
        .iter()
        .find(|(_, sha256)| sha256.as_deref() == Some(digest.hex()))
    else {
        let signed: Vec<_> = statement.subjects.iter().filter_map(|(_, d)| d.clone()).collect();
        return Err((
            Reason::DigestMismatch,
            format!(
                "the bundle signs sha256:{}, not this digest",
                signed.join(", sha256:")
            ),
        ));
    };
    if let Some(name) = name {
        check_identity(policy, image, name).map_err(|m| (Reason::IdentityMismatch, m))?;
    }
    if let Some(message) = missing_annotation(&policy.annotations, &statement.annotations) {
        return Err((Reason::AnnotationMismatch, message));
    }
    Ok(Accepted {
        key_id: key.key_id(),
        payload_digest: Digest::of(&envelope.payload),
        identity: name.clone().unwrap_or_else(|| image.name()),
        bundle_referrer: None,
    })
}

fn remapped(policy: &VerifyPolicy, signed: &str) -> String {
    for (from, to) in &policy.remaps {
        if signed == from {
            return to.clone();
        }
        if let Some(rest) = signed.strip_prefix(from.as_str())
            && rest.starts_with('/')
        {
            return format!("{to}{rest}");
        }
    }
    signed.to_string()
}

fn check_identity(policy: &VerifyPolicy, image: &RegistryRef, signed: &str) -> Result<(), String> {
    let expected = simple_signing::docker_reference(image);
    let signed = remapped(policy, signed);
    let repository_of = |name: &str| {
        name.split_once('/')
            .map(|(_, path)| path.to_string())
            .unwrap_or_default()
    };
    let ok = match policy.identity {
        Identity::Any => true,
        Identity::Exact => signed == expected,
        Identity::Repository => repository_of(&signed) == repository_of(&expected),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the signature names {signed}, not {expected} (--identity {}; --identity-remap maps a signing location to this one)",
            match policy.identity {
                Identity::Exact => "exact",
                Identity::Repository => "repository",
                Identity::Any => "any",
            }
        ))
    }
}

fn missing_annotation(
    required: &BTreeMap<String, String>,
    optional: &serde_json::Map<String, Value>,
) -> Option<String> {
    for (key, wanted) in required {
        let found = optional.get(key).map(|v| match v {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        });
        if found.as_deref() != Some(wanted.as_str()) {
            return Some(format!(
                "annotation {key}={wanted} required, signature has {}",
                found
                    .map(|f| format!("{key}={f}"))
                    .unwrap_or_else(|| "none".into())
            ));
        }
    }
    None
}
