//! The gate: which records may be deployed (a `verify` event vouches for
//! the record's current image and digest), and the all-or-nothing refusal
//! of a batch that holds any failure.

use std::io::BufRead;

use serde_json::Value;

use super::{Batch, Entry, Failure, Outcome, STEP, Target};
use crate::oci::digest::Digest;
use crate::oci::reference::{ReferenceError, RegistryRef};
use crate::pipeline::exit;
use crate::record::{self, ErrorCode, Origin, Record, RecordError, field};

impl Batch {
    /// Reads every line of `reader` (records only: references cannot carry
    /// a verification).
    pub fn read(reader: impl BufRead) -> std::io::Result<Batch> {
        let mut batch = Batch::default();
        for line in record::read_lines(reader, false) {
            let line = line?;
            let origin = Origin::Stdin(line.number);
            match line.input {
                record::Input::Record(record) => {
                    if record.is_error() {
                        batch.upstream_failures += 1;
                    }
                    batch.entries.push(Entry {
                        origin,
                        record,
                        target: None,
                        failure: None,
                    });
                }
                // read_lines without references never gives one; kept total.
                record::Input::Reference(text) => {
                    batch.push_unreadable(origin, format!("expected a JSON record, not {text:?}"))
                }
                record::Input::Malformed(message) => batch.push_unreadable(origin, message),
            }
        }
        Ok(batch)
    }

    /// A line that is not a record: an error record naming it (exit 2).
    fn push_unreadable(&mut self, origin: Origin, message: String) {
        let message = format!("{origin}: {message}");
        let mut record = Record::new();
        record.fail(STEP, ErrorCode::MalformedInput, message.clone());
        self.unreadable += 1;
        self.entries.push(Entry {
            origin,
            record,
            target: None,
            failure: Some(Failure::new(ErrorCode::MalformedInput, message)),
        });
    }

    /// Applies the gate to every record; `warn` hears about each record
    /// let through by `--allow-unverified`. True when every record passed.
    pub fn gate(&mut self, options: &super::Options, warn: &mut dyn FnMut(String)) -> bool {
        let allow_unverified = options.allow_unverified;
        let mut passed = true;
        for entry in &mut self.entries {
            if entry.record.is_error() {
                passed = false;
                continue;
            }
            let origin = entry.origin;
            let (image, digest) = match located(&entry.record) {
                Ok(found) => found,
                Err(message) => {
                    entry.failure = Some(Failure::new(
                        ErrorCode::BadReference,
                        format!("{origin}: {message}"),
                    ));
                    passed = false;
                    continue;
                }
            };
            let vouched = verification(&entry.record, &image, &digest).and_then(|event| {
                missing_attestation(event, &options.required_attestations).map_or(Ok(event), Err)
            });
            let (verified, key_id) = match vouched {
                Ok(event) => (true, event["keyId"].as_str().map(str::to_string)),
                Err(why) if allow_unverified => {
                    warn(format!(
                        "{origin}: {}@{digest} is NOT verified ({why}); deploying it anyway because of --allow-unverified",
                        image.name()
                    ));
                    (false, None)
                }
                Err(why) => {
                    entry.failure = Some(Failure::new(
                        ErrorCode::Unverified,
                        format!(
                            "{origin}: {}@{digest}: {why}: refusing to deploy an unverified image (run os-verify before os-deploy)",
                            image.name()
                        ),
                    ));
                    passed = false;
                    continue;
                }
            };
            entry.target = Some(Target {
                service: entry.record.get_str(field::SERVICE).map(str::to_string),
                image,
                digest,
                verified,
                key_id,
            });
        }
        passed && self.unreadable == 0
    }

    /// Ends the run without deploying anything: every record that did not
    /// fail upstream leaves as an error record (its own reason, or
    /// `batch-refused` naming what stopped the batch). Returns the records
    /// and the exit code.
    pub fn refuse(mut self, batch_reason: Option<Failure>) -> Outcome {
        let mut reasons: Vec<String> = Vec::new();
        if self.upstream_failures > 0 {
            let failed: Vec<String> = self
                .entries
                .iter()
                .filter(|e| e.record.is_error() && e.failure.is_none())
                .map(|e| e.origin.to_string())
                .collect();
            reasons.push(format!(
                "the batch holds {} error record(s) from an earlier step ({})",
                self.upstream_failures,
                failed.join(", ")
            ));
        }
        let own: Vec<String> = self
            .entries
            .iter()
            .filter_map(|e| e.failure.as_ref().map(|_| e.origin.to_string()))
            .collect();
        if !own.is_empty() {
            reasons.push(format!("{} failed here", own.join(", ")));
        }
        let exit_code = if self.unreadable > 0
            || batch_reason
                .as_ref()
                .is_some_and(|reason| reason.code == ErrorCode::BadManifest)
        {
            exit::USAGE
        } else {
            exit::FAILED
        };
        // Each reason is told once on stderr, not once per record.
        let mut messages = Vec::new();
        let mut refused = 0;
        for entry in &mut self.entries {
            if entry.record.is_error() && entry.failure.is_none() {
                continue; // failed upstream: passed through untouched
            }
            let (code, message) = match (&entry.failure, &batch_reason) {
                (Some(failure), _) => {
                    messages.push(failure.message.clone());
                    (failure.code, failure.message.clone())
                }
                (None, Some(reason)) => (reason.code, format!("{}: {}", entry.origin, reason.message)),
                (None, None) => {
                    refused += 1;
                    (
                        ErrorCode::BatchRefused,
                        format!("{}: not deployed: {}", entry.origin, reasons.join("; ")),
                    )
                }
            };
            if code != ErrorCode::MalformedInput {
                entry.record.fail(STEP, code, message);
            }
        }
        if let Some(reason) = &batch_reason {
            messages.push(format!("nothing was deployed: {}", reason.message));
        } else if refused > 0 || self.upstream_failures > 0 {
            messages.push(format!("nothing was deployed: {}", reasons.join("; ")));
        }
        Outcome {
            records: self.entries.into_iter().map(|e| e.record).collect(),
            exit_code,
            messages,
        }
    }
}

/// Why a record names nothing a cluster could run.
#[derive(Debug, thiserror::Error)]
pub enum Undeployable {
    #[error("the record has no image")]
    NoImage,
    #[error("{0} is an OCI layout, which a cluster cannot pull: os-import it to a registry first")]
    Layout(String),
    #[error(transparent)]
    BadImage(#[from] ReferenceError),
    #[error("{0}: the record has no digest")]
    NoDigest(String),
    #[error(transparent)]
    BadDigest(#[from] RecordError),
}

fn located(record: &Record) -> Result<(RegistryRef, Digest), Undeployable> {
    let text = record.image().ok_or(Undeployable::NoImage)?;
    if text.starts_with("oci:") {
        return Err(Undeployable::Layout(text.to_string()));
    }
    let image: RegistryRef = text.parse()?;
    let digest = record
        .digest()?
        .ok_or_else(|| Undeployable::NoDigest(text.to_string()))?;
    Ok((image.with(None), digest))
}

/// Why no verify event vouches for a record's image and digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unverified {
    #[error("no verify event in its history")]
    NoVerifyEvent,
    #[error("its verify event says it is not verified")]
    NotVerified,
    #[error("its verify event is for another digest")]
    OtherDigest,
    #[error("verified at {}, but the image is now at {now}: verify it where it is", at.join(", "))]
    Elsewhere { at: Vec<String>, now: String },
    #[error(
        "its verify event lists no {0} attestation (--require-attestation): run os-verify --attestation {0}"
    )]
    NoAttestation(String),
}

/// The first `--require-attestation` type the vouching verify event does
/// not list among the attestations it accepted (by cosign's name or by
/// predicate type).
fn missing_attestation(event: &Value, required: &[String]) -> Option<Unverified> {
    let listed: Vec<&Value> = event["attestations"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    required
        .iter()
        .find(|wanted| {
            let uri =
                crate::signing::attestation::predicate_type(wanted).unwrap_or_else(|_| wanted.to_string());
            !listed
                .iter()
                .any(|a| a["type"] == wanted.as_str() || a["predicateType"] == uri.as_str())
        })
        .map(|wanted| Unverified::NoAttestation(wanted.clone()))
}

/// Whether a successful `verify` event vouches for `image` at `digest`:
/// that event, or why not.
pub fn verification<'r>(
    record: &'r Record,
    image: &RegistryRef,
    digest: &Digest,
) -> Result<&'r Value, Unverified> {
    let events: Vec<&Value> = record
        .history()
        .iter()
        .filter(|event| event["step"] == "verify")
        .collect();
    if events.is_empty() {
        return Err(Unverified::NoVerifyEvent);
    }
    let mut elsewhere = Vec::new();
    for event in events.iter().rev() {
        let at = event["image"]
            .as_str()
            .and_then(|text| text.parse::<RegistryRef>().ok())
            .map(|r| r.name());
        if at.as_deref() != Some(image.name().as_str()) {
            elsewhere.push(at.unwrap_or_else(|| "an unnamed image".into()));
            continue;
        }
        if event["verified"] != Value::Bool(true) {
            return Err(Unverified::NotVerified);
        }
        if verified_digest(event).as_ref() != Some(digest) {
            return Err(Unverified::OtherDigest);
        }
        return Ok(event);
    }
    Err(Unverified::Elsewhere {
        at: elsewhere,
        now: image.name(),
    })
}

/// The digest a verify event vouches for: its `digest`, else the one its
/// `signature` (`…:sha256-<hex>.sig@…`, cosign's tag scheme) is for.
fn verified_digest(event: &Value) -> Option<Digest> {
    if let Some(text) = event["digest"].as_str() {
        return text.parse().ok();
    }
    let signature = event["signature"].as_str()?;
    let start = signature.find(":sha256-")? + 1;
    let tag = &signature[start..];
    let hex = tag.strip_prefix("sha256-")?.split(".sig").next()?;
    format!("sha256:{hex}").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verify_event_names_its_digest_through_the_signature_tag() {
        let hex = "ab".repeat(32);
        let event = serde_json::json!({
            "signature": format!("localhost:5000/a/b:sha256-{hex}.sig@sha256:{}", "cd".repeat(32))
        });
        assert_eq!(
            verified_digest(&event).unwrap().to_string(),
            format!("sha256:{hex}")
        );
        let explicit = serde_json::json!({"digest": format!("sha256:{}", "ef".repeat(32)), "signature": "x"});
        assert_eq!(verified_digest(&explicit).unwrap().hex(), "ef".repeat(32));
        assert!(verified_digest(&serde_json::json!({"signature": "r/a:latest"})).is_none());
    }
}
