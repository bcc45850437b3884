//! The policy a candidate signature must meet, one small check per rule
//! (as sigstore-rs's `verification_constraint/`), the same for both
//! formats: a given key verifies it, it signs this digest, it names an
//! acceptable identity, and it carries the required annotations. The rules
//! run in that order and the first unmet one rejects it; its reason is
//! ordered by how far the candidate got.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::candidate::{Candidate, Claims, Format};
use super::{Accepted, Identity, Reason, Rejection, VerifyPolicy};
use crate::oci::digest::Digest;
use crate::oci::reference::RegistryRef;
use crate::signing::key::PublicKey;
use crate::signing::simple_signing;

impl VerifyPolicy {
    /// Checks one candidate for the image at `image` with `digest`. Pure:
    /// no I/O, so the interop vectors test it directly.
    pub(super) fn check(
        &self,
        image: &RegistryRef,
        digest: &Digest,
        candidate: &Candidate,
    ) -> Result<Accepted, Rejection> {
        let key = signing_key(&self.keys, candidate)?;
        let claims = candidate.claims()?;
        let identity = signed_identity(candidate.format, &claims, digest)?;
        if let Some(signed) = identity {
            check_identity(self, image, signed)?;
        }
        check_annotations(&self.annotations, &claims.annotations)?;
        Ok(Accepted {
            key_id: key.key_id(),
            payload_digest: candidate.payload_digest(),
            identity: identity.map_or_else(|| image.name(), str::to_string),
            bundle_referrer: None,
        })
    }
}

/// Rule 1: one of the given keys verifies one of its signatures.
fn signing_key<'k>(keys: &'k [PublicKey], candidate: &Candidate) -> Result<&'k PublicKey, Rejection> {
    keys.iter()
        .find(|key| {
            candidate
                .signatures
                .iter()
                .any(|s| key.verify(s, &candidate.signed))
        })
        .ok_or_else(|| {
            let what = match candidate.format {
                Format::SimpleSigning => "signature",
                Format::Bundle => "bundle signature",
            };
            Rejection::new(
                Reason::KeyMismatch,
                format!("no {what} verifies with the given key(s)"),
            )
        })
}

/// Rule 2: it signs this digest; the docker-reference that names it, if any.
fn signed_identity<'c>(
    format: Format,
    claims: &'c Claims,
    digest: &Digest,
) -> Result<Option<&'c str>, Rejection> {
    let wanted = digest.to_string();
    if let Some((_, name)) = claims.subjects.iter().find(|(signed, _)| *signed == wanted) {
        return Ok(name.as_deref());
    }
    let signed: Vec<&str> = claims
        .subjects
        .iter()
        .map(|(signed, _)| signed.as_str())
        .collect();
    let message = match format {
        Format::SimpleSigning => format!("the signature is for {}, not this digest", signed.join(", ")),
        Format::Bundle => format!("the bundle signs {}, not this digest", signed.join(", ")),
    };
    Err(Rejection::new(Reason::DigestMismatch, message))
}

/// Rule 3: the signed docker-reference (after `--identity-remap`) matches
/// where the image is, as `--identity` asks.
pub(super) fn check_identity(
    policy: &VerifyPolicy,
    image: &RegistryRef,
    signed: &str,
) -> Result<(), Rejection> {
    let expected = simple_signing::docker_reference(image);
    let signed = remapped(&policy.remaps, signed);
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
        return Ok(());
    }
    Err(Rejection::new(
        Reason::IdentityMismatch,
        format!(
            "the signature names {signed}, not {expected} (--identity {}; --identity-remap maps a signing location to this one)",
            policy.identity.name()
        ),
    ))
}

fn remapped(remaps: &[(String, String)], signed: &str) -> String {
    for (from, to) in remaps {
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

/// Rule 4: every required annotation is there, with its value.
fn check_annotations(
    required: &BTreeMap<String, String>,
    signed: &Map<String, Value>,
) -> Result<(), Rejection> {
    for (key, wanted) in required {
        let found = signed.get(key).map(|v| match v {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        });
        if found.as_deref() != Some(wanted.as_str()) {
            return Err(Rejection::new(
                Reason::AnnotationMismatch,
                format!(
                    "annotation {key}={wanted} required, signature has {}",
                    found
                        .map(|f| format!("{key}={f}"))
                        .unwrap_or_else(|| "none".into())
                ),
            ));
        }
    }
    Ok(())
}
