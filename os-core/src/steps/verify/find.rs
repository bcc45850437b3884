//! Finding the signatures of a digest where the image is: cosign's
//! `sha256-<hex>.sig` tag first, then OCI 1.1 referrers (cosign signature
//! manifests and Sigstore bundles). Everything read is checked against its
//! digest before it is trusted; the first candidate that meets the policy
//! is accepted, and otherwise the most telling rejection is reported.

use serde_json::Value;

use super::candidate::Candidate;
use super::{Accepted, Reason, Rejection, VerifyPolicy};
use crate::oci::digest::Digest;
use crate::oci::layout::LayoutError;
use crate::oci::manifest;
use crate::oci::reference::RegistryRef;
use crate::oci::registry::RegistryError;
use crate::oci::store::{Place, StoreError, Stores};
use crate::signing::bundle;
use crate::signing::simple_signing::{self, SIMPLE_SIGNING};

/// The artifact type cosign gives signatures stored as OCI 1.1 referrers.
const COSIGN_SIGNATURE_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";

/// What one record's search looks at, and the most telling rejection so far.
struct Search<'a> {
    stores: &'a Stores,
    source: &'a Place,
    policy: &'a VerifyPolicy,
    image: &'a RegistryRef,
    digest: &'a Digest,
    worst: Option<Rejection>,
}

pub(super) async fn find_accepted(
    stores: &Stores,
    source: &Place,
    policy: &VerifyPolicy,
    image: &RegistryRef,
    digest: &Digest,
) -> Result<Accepted, Rejection> {
    let mut search = Search {
        stores,
        source,
        policy,
        image,
        digest,
        worst: None,
    };
    // cosign's tag scheme first (what cosign 2 writes by default)...
    if let Some(accepted) = search.in_signature_tag().await {
        return Ok(accepted);
    }
    // ...then OCI 1.1 referrers (cosign --registry-referrers-mode=oci-1-1).
    if let Some(accepted) = search.in_referrers().await {
        return Ok(accepted);
    }
    Err(search.worst.unwrap_or_else(|| {
        Rejection::new(
            Reason::NoSignature,
            "the signature manifest holds no cosign signature",
        )
    }))
}

impl Search<'_> {
    /// Keeps the rejection of the candidate that got furthest.
    fn note(&mut self, rejection: Rejection) {
        if self
            .worst
            .as_ref()
            .is_none_or(|worst| rejection.reason > worst.reason)
        {
            self.worst = Some(rejection);
        }
    }

    async fn in_signature_tag(&mut self) -> Option<Accepted> {
        let tag = simple_signing::signature_tag(self.digest);
        match self.source.tagged(self.stores, &tag).await {
            Ok(Some(bytes)) => self.in_signature_manifest(&bytes).await,
            Ok(None) => {
                self.note(Rejection::new(
                    Reason::NoSignature,
                    format!("no signature (no {tag}, no OCI 1.1 referrer)"),
                ));
                None
            }
            Err(error) => {
                self.note(read_failure("signature manifest", error));
                None
            }
        }
    }

    async fn in_referrers(&mut self) -> Option<Accepted> {
        let listing = match self.source.referrers(self.stores, self.digest).await {
            Ok(listing) => listing,
            Err(error) => {
                self.note(read_failure("referrers", error));
                return None;
            }
        };
        for entry in listing.entries {
            let is_signature =
                entry.get("artifactType").and_then(Value::as_str) == Some(COSIGN_SIGNATURE_ARTIFACT);
            let is_bundle = bundle::may_be_bundle(&entry);
            let Some(referrer) = manifest::descriptor_digest(&entry).filter(|_| is_signature || is_bundle)
            else {
                continue;
            };
            let bytes = match self.source.manifest(self.stores, &referrer).await {
                Ok(bytes) => bytes,
                Err(error) => {
                    self.note(read_failure("referrer", error));
                    continue;
                }
            };
            let accepted = if is_signature {
                self.in_signature_manifest(&bytes).await
            } else {
                // A Sigstore bundle (cosign 3, os-sign --storage referrers).
                self.in_bundle_referrer(&bytes).await.map(|accepted| Accepted {
                    bundle_referrer: Some(referrer),
                    ..accepted
                })
            };
            if accepted.is_some() {
                return accepted;
            }
        }
        None
    }

    /// Every signature layer of one signature manifest.
    async fn in_signature_manifest(&mut self, manifest: &[u8]) -> Option<Accepted> {
        let layers = match simple_signing::parse_signature_manifest(manifest) {
            Ok(layers) => layers,
            Err(error) => {
                self.note(Rejection::new(Reason::MalformedSignature, error.to_string()));
                return None;
            }
        };
        for layer in layers.iter().filter(|l| l.media_type == SIMPLE_SIGNING) {
            let payload = match self.source.blob(self.stores, &layer.digest).await {
                Ok(payload) => payload,
                Err(error) => {
                    self.note(read_failure("payload", error));
                    continue;
                }
            };
            let candidate =
                Candidate::simple_signing(&layer.media_type, &payload, layer.signature.as_deref());
            if let Some(accepted) = self.judge(candidate) {
                return Some(accepted);
            }
        }
        None
    }

    /// The bundle layer of one bundle referrer.
    async fn in_bundle_referrer(&mut self, manifest: &[u8]) -> Option<Accepted> {
        let layer = bundle::bundle_layer(manifest)?;
        match self.source.blob(self.stores, &layer).await {
            Ok(bytes) => self.judge(Candidate::bundle(&bytes)),
            Err(error) => {
                self.note(read_failure("bundle", error));
                None
            }
        }
    }

    fn judge(&mut self, candidate: Result<Candidate, Rejection>) -> Option<Accepted> {
        let judged = candidate.and_then(|candidate| self.policy.check(self.image, self.digest, &candidate));
        match judged {
            Ok(accepted) => Some(accepted),
            Err(rejection) => {
                self.note(rejection);
                None
            }
        }
    }
}

/// A failure to read, as a rejection: content that does not match its
/// digest is a tampered signature, anything else a store error.
fn read_failure(what: &str, error: StoreError) -> Rejection {
    let tampered = matches!(
        error,
        StoreError::Registry(RegistryError::DigestMismatch { .. })
            | StoreError::Layout(LayoutError::Corrupt { .. } | LayoutError::DigestMismatch { .. })
    );
    if tampered {
        Rejection::new(Reason::MalformedSignature, format!("tampered {what}: {error}"))
    } else {
        Rejection::new(Reason::RegistryError, error.to_string())
    }
}
