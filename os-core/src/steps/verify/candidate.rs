//! Both signature formats as one candidate: a `.sig` layer (cosign's
//! simple-signing payload with a base64 signature annotation) and a
//! Sigstore bundle (a DSSE-signed in-toto statement, cosign 3). Decoding
//! stops at what a key can check; what the payload claims is read only
//! after a key verified it ([`Candidate::claims`]).

use serde_json::{Map, Value};

use super::{Reason, Rejection};
use crate::oci::digest::Digest;
use crate::signing::bundle;
use crate::signing::simple_signing::{self, SIMPLE_SIGNING};

/// Which format a candidate came in; it words the messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Format {
    SimpleSigning,
    Bundle,
}

/// One signature, decoded as far as a key can check it.
pub(super) struct Candidate {
    pub(super) format: Format,
    /// The bytes the signatures are over (the payload, or the DSSE PAE).
    pub(super) signed: Vec<u8>,
    pub(super) signatures: Vec<Vec<u8>>,
    /// What the signer signed: the simple-signing payload, or the statement.
    pub(super) payload: Vec<u8>,
}

/// What a verified payload says.
pub(super) struct Claims {
    /// What it signs: each digest (`sha256:<hex>`) with the
    /// docker-reference that names it (a cosign 3 bundle names none).
    pub(super) subjects: Vec<(String, Option<String>)>,
    pub(super) annotations: Map<String, Value>,
}

impl Candidate {
    /// A `.sig` layer: its media type, payload and signature annotation.
    pub(super) fn simple_signing(
        media_type: &str,
        payload: &[u8],
        signature_base64: Option<&str>,
    ) -> Result<Candidate, Rejection> {
        if media_type != SIMPLE_SIGNING {
            return Err(Rejection::new(
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
            return Err(Rejection::new(
                Reason::MalformedSignature,
                "signature annotation missing or not base64",
            ));
        };
        Ok(Candidate {
            format: Format::SimpleSigning,
            signed: payload.to_vec(),
            signatures: vec![signature],
            payload: payload.to_vec(),
        })
    }

    /// A Sigstore bundle's bytes.
    pub(super) fn bundle(bundle_bytes: &[u8]) -> Result<Candidate, Rejection> {
        let envelope = bundle::parse_bundle(bundle_bytes)
            .map_err(|e| Rejection::new(Reason::MalformedSignature, e.to_string()))?;
        if envelope.payload_type != bundle::IN_TOTO_PAYLOAD_TYPE {
            return Err(Rejection::new(
                Reason::NoSignature,
                format!("a bundle of {} is not an image signature", envelope.payload_type),
            ));
        }
        Ok(Candidate {
            format: Format::Bundle,
            signed: envelope.signed_bytes(),
            signatures: envelope.signatures,
            payload: envelope.payload,
        })
    }

    /// The payload's digest, as events name what was verified.
    pub(super) fn payload_digest(&self) -> Digest {
        Digest::of(&self.payload)
    }

    /// What the (verified) payload claims.
    pub(super) fn claims(&self) -> Result<Claims, Rejection> {
        match self.format {
            Format::SimpleSigning => {
                let parsed = simple_signing::parse_payload(&self.payload).map_err(|e| {
                    Rejection::new(Reason::MalformedSignature, format!("signed payload: {e}"))
                })?;
                Ok(Claims {
                    subjects: vec![(parsed.manifest_digest, Some(parsed.docker_reference))],
                    annotations: parsed.optional,
                })
            }
            Format::Bundle => {
                let statement = bundle::parse_statement(&self.payload)
                    .map_err(|e| Rejection::new(Reason::MalformedSignature, e.to_string()))?;
                if statement.predicate_type != bundle::SIGN_PREDICATE {
                    return Err(Rejection::new(
                        Reason::NoSignature,
                        format!(
                            "an attestation of type {} is not an image signature",
                            statement.predicate_type
                        ),
                    ));
                }
                let subjects = statement
                    .subjects
                    .into_iter()
                    .filter_map(|(name, sha256)| Some((format!("sha256:{}", sha256?), name)))
                    .collect();
                Ok(Claims {
                    subjects,
                    annotations: statement.annotations,
                })
            }
        }
    }
}
