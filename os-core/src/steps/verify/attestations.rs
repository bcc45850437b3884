//! `--attestation TYPE`: each record must carry a DSSE envelope of that
//! predicate type whose signature verifies with one of the keys and whose
//! in-toto statement names the record's digest as its subject (as `cosign
//! verify-attestation --type` checks): in its `sha256-<hex>.att` manifest
//! (cosign 2), or as a Sigstore bundle referrer (`--new-bundle-format`),
//! looked for only when the tag has none. Every blob is read by digest and
//! checked against it.

use serde_json::Value;

use super::{Reason, Rejection, VerifyPolicy};
use crate::oci::digest::Digest;
use crate::oci::manifest;
use crate::oci::reference::RegistryRef;
use crate::oci::store::{Place, Stores};
use crate::signing::attestation;
use crate::signing::bundle;

/// A required attestation: `--type` as given, and the predicate type URI.
#[derive(Debug, Clone)]
pub struct WantedAttestation {
    pub type_name: String,
    pub predicate_type: String,
}

impl WantedAttestation {
    /// `--attestation TYPE`: one of cosign's names or a URI.
    pub fn named(type_name: &str) -> Result<WantedAttestation, attestation::AttestationError> {
        Ok(WantedAttestation {
            type_name: type_name.to_string(),
            predicate_type: attestation::predicate_type(type_name)?,
        })
    }
}

/// An attestation that passed, for the verify event.
#[derive(Debug)]
pub struct CheckedAttestation {
    pub type_name: String,
    pub predicate_type: String,
    /// The `.att` layer holding the envelope, or the bundle's referrer.
    pub digest: Digest,
    pub key_id: String,
    /// `--ignore-vuln` IDs this attestation's report needed.
    pub ignored: Vec<String>,
}

impl CheckedAttestation {
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "type": self.type_name,
            "predicateType": self.predicate_type,
            "digest": self.digest.to_string(),
            "keyId": self.key_id,
            "ignoredVulns": self.ignored,
        })
    }
}

/// The `.att` manifest's DSSE layers: digest and predicate type annotation.
fn att_layers(bytes: &[u8]) -> Result<Vec<(Digest, Option<String>)>, Rejection> {
    let manifest: Value = serde_json::from_slice(bytes)
        .map_err(|e| Rejection::new(Reason::MalformedSignature, format!("the .att manifest: {e}")))?;
    Ok(manifest
        .get("layers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(attestation::layer_of)
        .collect())
}

/// Where one record's attestations are looked for, and what they must say.
struct Search<'a> {
    stores: &'a Stores,
    place: &'a Place,
    policy: &'a VerifyPolicy,
    image: &'a RegistryRef,
    digest: &'a Digest,
    commit: Option<&'a str>,
}

/// One accepted attestation per wanted type, or why the first type without
/// one failed (the most telling rejection among its candidates).
pub(super) async fn check_attestations(
    stores: &Stores,
    place: &Place,
    policy: &VerifyPolicy,
    image: &RegistryRef,
    digest: &Digest,
    commit: Option<&str>,
) -> Result<Vec<CheckedAttestation>, Rejection> {
    if policy.attestations.is_empty() {
        return Ok(Vec::new());
    }
    let tag = format!("{}.att", digest.tag_form());
    let layers = match place.tagged(stores, &tag).await {
        Ok(Some(bytes)) => att_layers(&bytes)?,
        Ok(None) => Vec::new(),
        Err(error) => return Err(Rejection::new(Reason::RegistryError, error.to_string())),
    };
    let search = Search {
        stores,
        place,
        policy,
        image,
        digest,
        commit,
    };
    let mut checked = Vec::new();
    let mut referrers: Option<Vec<Value>> = None;
    for wanted in &policy.attestations {
        let tagged = search.accept_one(&layers, wanted).await;
        let Err(in_tag) = tagged else {
            checked.extend(tagged);
            continue;
        };
        if referrers.is_none() {
            referrers = Some(match place.referrers(stores, digest).await {
                Ok(listing) => listing.entries,
                Err(error) => return Err(Rejection::new(Reason::RegistryError, error.to_string())),
            });
        }
        let listed = referrers.as_deref().unwrap_or_default();
        checked.push(search.accept_bundle(listed, wanted, in_tag).await?);
    }
    Ok(checked)
}

/// The first bundle referrer of the wanted type that passes; else the
/// most telling rejection, `so_far` included.
impl Search<'_> {
    async fn accept_bundle(
        &self,
        listed: &[Value],
        wanted: &WantedAttestation,
        so_far: Rejection,
    ) -> Result<CheckedAttestation, Rejection> {
        let mut best = so_far;
        let candidates = listed
            .iter()
            .filter(|entry| bundle::may_be_bundle_of(entry, &wanted.predicate_type))
            .filter_map(manifest::descriptor_digest);
        for referrer in candidates {
            let read =
                |e: crate::oci::store::StoreError| Rejection::new(Reason::RegistryError, e.to_string());
            let referrer_manifest = self.place.manifest(self.stores, &referrer).await.map_err(read)?;
            let Some(layer) = bundle::bundle_layer(&referrer_manifest) else {
                continue;
            };
            let bytes = self.place.blob(self.stores, &layer).await.map_err(read)?;
            let judged = bundle::parse_bundle(&bytes)
                .map_err(|e| Rejection::new(Reason::MalformedSignature, e.to_string()))
                .and_then(|envelope| {
                    check_statement(
                        self.policy,
                        (self.image, self.digest),
                        self.commit,
                        wanted,
                        &envelope,
                    )
                });
            match judged {
                Ok((key_id, ignored)) => {
                    return Ok(CheckedAttestation {
                        type_name: wanted.type_name.clone(),
                        predicate_type: wanted.predicate_type.clone(),
                        digest: referrer,
                        key_id,
                        ignored,
                    });
                }
                Err(rejection) if rejection.reason > best.reason => best = rejection,
                Err(_) => {}
            }
        }
        Err(best)
    }

    async fn accept_one(
        &self,
        layers: &[(Digest, Option<String>)],
        wanted: &WantedAttestation,
    ) -> Result<CheckedAttestation, Rejection> {
        // The annotation is a hint only (the statement decides), so layers
        // without one are read too.
        let candidates = layers
            .iter()
            .filter(|(_, kind)| kind.as_ref().is_none_or(|kind| *kind == wanted.predicate_type));
        let mut best = Rejection::new(
            Reason::NoAttestation,
            format!(
                "no {} attestation ({}) in {}.att",
                wanted.type_name,
                wanted.predicate_type,
                self.digest.tag_form()
            ),
        );
        for (layer, _) in candidates {
            let bytes = self
                .place
                .blob(self.stores, layer)
                .await
                .map_err(|e| Rejection::new(Reason::RegistryError, e.to_string()))?;
            match check_envelope(
                self.policy,
                (self.image, self.digest),
                self.commit,
                wanted,
                &bytes,
            ) {
                Ok((key_id, ignored)) => {
                    return Ok(CheckedAttestation {
                        type_name: wanted.type_name.clone(),
                        predicate_type: wanted.predicate_type.clone(),
                        digest: layer.clone(),
                        key_id,
                        ignored,
                    });
                }
                Err(rejection) if rejection.reason > best.reason => best = rejection,
                Err(_) => {}
            }
        }
        Err(best)
    }
}

/// One envelope against the policy: a key's signature over its PAE, an
/// in-toto statement of the wanted type about `digest`. Pure.
pub fn check_envelope(
    policy: &VerifyPolicy,
    (image, digest): (&RegistryRef, &Digest),
    commit: Option<&str>,
    wanted: &WantedAttestation,
    bytes: &[u8],
) -> Result<(String, Vec<String>), Rejection> {
    let envelope = attestation::parse(bytes).ok_or_else(|| {
        Rejection::new(
            Reason::MalformedSignature,
            "an .att layer is not a DSSE envelope of in-toto",
        )
    })?;
    check_statement(policy, (image, digest), commit, wanted, &envelope)
}

/// A DSSE envelope (from an `.att` layer or a bundle) against the policy.
fn check_statement(
    policy: &VerifyPolicy,
    (image, digest): (&RegistryRef, &Digest),
    commit: Option<&str>,
    wanted: &WantedAttestation,
    envelope: &bundle::Envelope,
) -> Result<(String, Vec<String>), Rejection> {
    let malformed = |detail: String| Rejection::new(Reason::MalformedSignature, detail);
    if envelope.payload_type != bundle::IN_TOTO_PAYLOAD_TYPE {
        return Err(malformed(format!(
            "a DSSE payload of type {}",
            envelope.payload_type
        )));
    }
    let signed = envelope.signed_bytes();
    let key = policy
        .keys
        .iter()
        .find(|key| envelope.signatures.iter().any(|s| key.verify(s, &signed)))
        .ok_or_else(|| {
            Rejection::new(
                Reason::KeyMismatch,
                format!(
                    "the {} attestation verifies with none of the keys",
                    wanted.type_name
                ),
            )
        })?;
    let statement = bundle::parse_statement(&envelope.payload).map_err(|e| malformed(e.to_string()))?;
    if statement.predicate_type != wanted.predicate_type {
        return Err(Rejection::new(
            Reason::NoAttestation,
            format!(
                "the signed statement's predicateType is {}, not {}",
                statement.predicate_type, wanted.predicate_type
            ),
        ));
    }
    let subject = statement
        .subjects
        .iter()
        .find(|(_, sha256)| sha256.as_deref() == Some(digest.hex()));
    let Some((name, _)) = subject else {
        return Err(Rejection::new(
            Reason::DigestMismatch,
            format!("the {} attestation's subject is not {digest}", wanted.type_name),
        ));
    };
    // The subject's name is the attested identity: the same rule as a
    // signature's docker-reference.
    if let Some(name) = name {
        super::policy::check_identity(policy, image, name)?;
    }
    if is_provenance(&wanted.predicate_type) {
        check_provenance(policy, commit, wanted, &statement.predicate)?;
    }
    let mut ignored = Vec::new();
    if wanted.predicate_type == attestation::VULN_PREDICATE && !policy.vuln.is_empty() {
        let judged = policy
            .vuln
            .judge(&statement.predicate, chrono::Utc::now())
            .map_err(|rule| {
                Rejection::new(Reason::AttestationPolicy, format!("the vuln attestation: {rule}"))
            })?;
        ignored = judged.ignored_used;
    }
    Ok((key.key_id(), ignored))
}

fn is_provenance(predicate_type: &str) -> bool {
    predicate_type.starts_with("https://slsa.dev/provenance/")
}

/// The provenance's source commit must be the record's (when both say
/// one), and its builder the pinned one (`--provenance-builder`).
fn check_provenance(
    policy: &VerifyPolicy,
    commit: Option<&str>,
    wanted: &WantedAttestation,
    predicate: &Value,
) -> Result<(), Rejection> {
    let refuse = |rule: String| {
        Rejection::new(
            Reason::AttestationPolicy,
            format!("the {} attestation: {rule}", wanted.type_name),
        )
    };
    let (built_from, builder) = crate::pipeline::provenance::commit_and_builder(predicate);
    if let (Some(expected), Some(built_from)) = (commit, built_from.as_deref())
        && !built_from.eq_ignore_ascii_case(expected)
    {
        return Err(refuse(format!(
            "built from commit {built_from}, but the record's source is {expected}"
        )));
    }
    if let Some(pinned) = &policy.provenance_builder
        && builder.as_deref() != Some(pinned.as_str())
    {
        return Err(refuse(format!(
            "--provenance-builder {pinned}: the builder is {}",
            builder.as_deref().unwrap_or("not named")
        )));
    }
    Ok(())
}
