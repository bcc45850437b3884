//! `os-sign attest`'s step: attach a signed in-toto attestation about each
//! record's digest the way `cosign attest --key` does — a DSSE envelope
//! appended to the `sha256-<hex>.att` manifest, or with `--storage
//! referrers` a Sigstore bundle referrer (`cosign attest
//! --new-bundle-format`) — with the key loaded once for the whole stream.

use std::path::Path;

use bytes::Bytes;
use serde_json::Value;

use crate::oci::digest::Digest;
use crate::oci::reference::RegistryRef;
use crate::oci::registry::RegistryError;
use crate::oci::store::Stores;
use crate::pipeline::{Step, Work, provenance};
use crate::record::{ErrorCode, Event, Origin, Record, field, located};
use crate::signing::attestation::{self, AttestationError};
use crate::signing::key::{KeyError, Signer};
use crate::signing::{simple_signing, vuln};
use crate::steps::digest as digest_step;
use crate::steps::sign::{Storage, TOOL, store_bundle};

const STEP: &str = "attest";

/// What every record is attested with.
#[derive(Debug, Clone)]
pub struct AttestOptions {
    /// `--type` as given (a cosign name or a URI).
    pub type_name: String,
    /// The predicate type URI it stands for.
    pub predicate_type: String,
    /// `None`: SLSA provenance v1 built for each record from the CI host.
    pub predicate: Option<Value>,
    pub storage: Storage,
    /// The Trivy report the predicate was made from: each record's digest
    /// is checked against the image it names.
    pub trivy_report: Option<Value>,
}

impl AttestOptions {
    /// `--type NAME --predicate FILE`, read once. `-` is refused: stdin
    /// carries the records.
    pub fn load(
        type_name: &str,
        path: Option<&Path>,
        storage: Storage,
    ) -> Result<AttestOptions, AttestationError> {
        let predicate_type = attestation::predicate_type(type_name)?;
        let Some(path) = path else {
            if predicate_type != attestation::SLSA_PROVENANCE_V1 {
                return Err(AttestationError::Predicate {
                    path: "(none)".into(),
                    detail: format!(
                        "--type {type_name} needs --predicate FILE (only slsaprovenance1 is built from the CI host)"
                    ),
                });
            }
            return Ok(AttestOptions {
                type_name: type_name.to_string(),
                predicate_type,
                predicate: None,
                storage,
                trivy_report: None,
            });
        };
        let shown = path.display().to_string();
        if shown == "-" {
            return Err(AttestationError::Predicate {
                path: shown,
                detail: "stdin carries the records; give the predicate as a file".into(),
            });
        }
        let bytes = std::fs::read(path).map_err(|e| AttestationError::Predicate {
            path: shown.clone(),
            detail: e.to_string(),
        })?;
        let mut predicate = attestation::predicate(&predicate_type, &shown, &bytes)?;
        let mut trivy_report = None;
        if predicate_type == attestation::VULN_PREDICATE && vuln::is_trivy_report(&predicate) {
            let run = crate::pipeline::source::run_url(&|name| std::env::var(name).ok());
            trivy_report = Some(predicate.clone());
            predicate = vuln::from_trivy(predicate, run.as_deref(), chrono::Utc::now());
        }
        Ok(AttestOptions {
            type_name: type_name.to_string(),
            predicate: Some(predicate),
            predicate_type,
            storage,
            trivy_report,
        })
    }
}

/// os-sign attest's step: one key, one predicate, every record.
pub struct Attesting {
    pub signer: Signer,
    pub options: AttestOptions,
}

impl Step for Attesting {
    const TOOL: &'static str = TOOL;
    const NAME: &'static str = STEP;

    async fn work(&self, stores: &Stores, origin: Origin, work: Work) -> Record {
        let record = digest_step::record_for(stores, TOOL, origin, work).await;
        if record.is_error() {
            return record;
        }
        self.attest_record(stores, origin, record).await
    }
}

impl Attesting {
    async fn attest_record(&self, stores: &Stores, origin: Origin, mut record: Record) -> Record {
        let (image, digest) = match located(&record, origin, STEP) {
            Ok(found) => found,
            Err(failed) => return failed,
        };
        let options = &self.options;
        if let Some(named) = options
            .trivy_report
            .as_ref()
            .and_then(|report| vuln::names_another_digest(report, &digest))
        {
            record.fail(
                STEP,
                ErrorCode::DigestMismatch,
                format!(
                    "{origin}: {image}@{digest}: the Trivy report is a scan of {named}, not of this digest"
                ),
            );
            return record;
        }
        let predicate = match &options.predicate {
            Some(predicate) => predicate.clone(),
            None => {
                let source = record.fields().get(field::SOURCE).and_then(Value::as_object);
                let env = |name: &str| std::env::var(name).ok();
                match provenance::from_ci(&env, source, chrono::Utc::now()) {
                    Ok(built) => built,
                    Err(missing) => {
                        record.fail(STEP, ErrorCode::MissingField, format!("{origin}: {missing}"));
                        return record;
                    }
                }
            }
        };
        let stored = match options.storage {
            Storage::Tag => {
                let attestation_ref = image.with_tag(format!("{}.att", digest.tag_form()));
                self.store(stores, &image, &attestation_ref, &digest, &predicate)
                    .await
                    .map(|(envelope, added)| (format!("{attestation_ref}@{envelope}"), added))
                    .map_err(|error| (attestation_ref.to_string(), error.code(), error.to_string()))
            }
            Storage::Referrers => {
                let name = simple_signing::docker_reference(&image);
                let statement = attestation::statement(&name, &digest, &options.predicate_type, &predicate);
                store_bundle(
                    stores,
                    &self.signer,
                    &image,
                    &digest,
                    statement,
                    &options.predicate_type,
                )
                .await
                .map(|(referrer, added, _)| (referrer, added))
                .map_err(|error| {
                    (
                        format!("{image}@{digest} (as a referrer)"),
                        error.code(),
                        error.to_string(),
                    )
                })
            }
        };
        match stored {
            Ok((attestation, added)) => {
                record.push_event(
                    Event::new(STEP, TOOL)
                        .with("type", options.type_name.clone())
                        .with("predicateType", options.predicate_type.clone())
                        .with("storage", options.storage.name())
                        .with("attestation", attestation)
                        .with("signer", self.signer.reference())
                        .with("keyId", self.signer.key_id())
                        .with("added", added),
                );
                record
            }
            Err((at, code, error)) => {
                record.fail(
                    STEP,
                    code,
                    format!("{origin}: storing the attestation at {at}: {error}"),
                );
                record
            }
        }
    }

    /// Appends the envelope to the `.att` manifest (creating it), unless a
    /// layer already holds this statement signed by this key. Returns the
    /// envelope's digest and whether it was added. The blob goes up before
    /// the manifest that names it.
    async fn store(
        &self,
        stores: &Stores,
        image: &RegistryRef,
        attestation_ref: &RegistryRef,
        digest: &Digest,
        predicate: &Value,
    ) -> Result<(Digest, bool), AttestError> {
        let registry = stores.registry();
        let options = &self.options;
        let name = simple_signing::docker_reference(image);
        let statement = attestation::statement(&name, digest, &options.predicate_type, predicate);
        let mut layers: Vec<Value> = Vec::new();
        if let Some((bytes, _)) = registry.fetch_manifest_if_any(attestation_ref).await? {
            let manifest: Value =
                serde_json::from_slice(&bytes).map_err(|e| AttestError::Existing(e.to_string()))?;
            layers = manifest
                .get("layers")
                .and_then(Value::as_array)
                .cloned()
                .ok_or_else(|| AttestError::Existing("it has no layers".into()))?;
            if let Some(found) = self
                .already_there(stores, attestation_ref, &layers, &statement)
                .await?
            {
                return Ok((found, false));
            }
        }
        let signature = self.signer.sign(&attestation::signed_bytes(&statement)).await?;
        let envelope = attestation::envelope(&statement, &signature);
        let envelope_digest = Digest::of(&envelope);
        layers.push(attestation::layer(&envelope, &options.predicate_type));
        registry
            .upload_small_blob(attestation_ref, Bytes::from(envelope))
            .await?;
        registry
            .push_small_blob_once(attestation_ref, Bytes::from_static(simple_signing::EMPTY_CONFIG))
            .await?;
        let manifest = simple_signing::signature_manifest(&layers);
        registry
            .push_manifest(
                attestation_ref,
                attestation_ref.tag.as_deref(),
                crate::oci::manifest::OCI_MANIFEST,
                Bytes::from(manifest),
            )
            .await?;
        Ok((envelope_digest, true))
    }

    /// The layer that already holds `statement` signed by this key.
    async fn already_there(
        &self,
        stores: &Stores,
        attestation_ref: &RegistryRef,
        layers: &[Value],
        statement: &[u8],
    ) -> Result<Option<Digest>, AttestError> {
        let public = self.signer.public_key();
        let same_type = layers
            .iter()
            .filter_map(attestation::layer_of)
            .filter(|(_, kind)| kind.as_deref() == Some(self.options.predicate_type.as_str()));
        for (layer, _) in same_type {
            let bytes = stores.registry().fetch_blob(attestation_ref, &layer).await?;
            let Some(envelope) = attestation::parse(&bytes) else {
                continue;
            };
            let signed = envelope.signed_bytes();
            if envelope.payload == statement && envelope.signatures.iter().any(|s| public.verify(s, &signed))
            {
                return Ok(Some(layer));
            }
        }
        Ok(None)
    }
}

#[derive(Debug, thiserror::Error)]
enum AttestError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("the existing attestation manifest is malformed: {0}")]
    Existing(String),
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl AttestError {
    fn code(&self) -> ErrorCode {
        match self {
            AttestError::Registry(error) => error.into(),
            AttestError::Existing(_) => ErrorCode::MalformedSignature,
            AttestError::Key(_) => ErrorCode::KeyError,
        }
    }
}
