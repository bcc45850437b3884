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
use crate::oci::layout::Layout;
use crate::oci::reference::{ImageRef, RegistryRef};
use crate::oci::store::{Place, Stores};
use crate::pipeline::{Step, Work};
use crate::record::Origin;
use crate::record::located;
use crate::record::{ErrorCode, Event, Record, field};
use crate::signing::key::PublicKey;
use crate::signing::simple_signing::{self};
use crate::signing::vuln::VulnPolicy;

mod attestations;
mod candidate;
mod find;
mod policy;

pub use attestations::{CheckedAttestation, WantedAttestation, check_envelope};

use candidate::Candidate;
use find::find_accepted;

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
    /// `--attestation TYPE`: each must be there, signed by one of the keys.
    pub attestations: Vec<WantedAttestation>,
    /// What a `vuln` attestation's report must pass.
    pub vuln: VulnPolicy,
    /// `--provenance-builder ID`: a provenance attestation's builder.
    pub provenance_builder: Option<String>,
}

/// Why a record failed verification, as a stable code; ordered by how far
/// a signature got, so the most telling reason is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    RegistryError,
    NoSignature,
    NoAttestation,
    MalformedSignature,
    KeyMismatch,
    DigestMismatch,
    IdentityMismatch,
    AnnotationMismatch,
    AttestationPolicy,
}

impl From<Reason> for ErrorCode {
    fn from(reason: Reason) -> ErrorCode {
        match reason {
            Reason::RegistryError => ErrorCode::RegistryError,
            Reason::NoSignature => ErrorCode::NoSignature,
            Reason::NoAttestation => ErrorCode::NoAttestation,
            Reason::MalformedSignature => ErrorCode::MalformedSignature,
            Reason::KeyMismatch => ErrorCode::KeyMismatch,
            Reason::DigestMismatch => ErrorCode::DigestMismatch,
            Reason::IdentityMismatch => ErrorCode::IdentityMismatch,
            Reason::AnnotationMismatch => ErrorCode::AnnotationMismatch,
            Reason::AttestationPolicy => ErrorCode::AttestationPolicy,
        }
    }
}

/// Why a candidate signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub message: String,
}

impl Rejection {
    pub fn new(reason: Reason, message: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            message: message.into(),
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
    let place = policy.source.place(&image);
    let checked = match find_accepted(stores, &place, policy, &image, &digest).await {
        Ok(accepted) => {
            attestations::check_attestations(stores, &place, policy, &image, &digest, source_commit(&record))
                .await
                .map(|attested| (accepted, attested))
        }
        Err(rejection) => Err(rejection),
    };
    match checked {
        Ok((accepted, attested)) => {
            let mut event = Event::new(STEP, TOOL)
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
                .with("verified", true);
            if !attested.is_empty() {
                let listed: Vec<Value> = attested.iter().map(CheckedAttestation::to_json).collect();
                event = event.with("attestations", listed);
            }
            record.push_event(event);
            record
        }
        Err(rejection) => {
            record.fail(
                STEP,
                rejection.reason.into(),
                format!("{origin}: {image}@{digest}: {}", rejection.message),
            );
            record
        }
    }
}

/// The commit the record says the image was built from.
fn source_commit(record: &Record) -> Option<&str> {
    record.fields().get(field::SOURCE)?.get("commit")?.as_str()
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

/// Where a record's signatures are read from: its registry, or an OCI
/// layout (`--offline DIR`, e.g. what an air-gapped site received).
pub enum SignatureSource {
    Registry,
    Layout(Arc<Layout>),
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
) -> Result<Accepted, Rejection> {
    let candidate = Candidate::simple_signing(media_type, payload, signature_base64)?;
    policy.check(image, digest, &candidate)
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
) -> Result<Accepted, Rejection> {
    policy.check(image, digest, &Candidate::bundle(bundle_bytes)?)
}
