//! `error.code`: the stable, machine-readable half of an error record, one
//! enum for every tool. `docs/record.schema.json` lists the same codes (a
//! test holds the two together), and `docs/record.md` says what each means.

use std::fmt;

use crate::oci::layout::LayoutError;
use crate::oci::registry::RegistryError;
use crate::oci::store::StoreError;

/// Declares the codes once: each variant with its kebab-case text.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $text:literal,)*) => {
        /// Why a record failed, as its `error.code` says.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[doc = $doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in the order `docs/record.md` lists them.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as records carry it (`bad-reference`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $text,)*
                }
            }
        }
    };
}

error_codes! {
    /// A stdin line that is not a record (or, where a tool takes them, a reference).
    MalformedInput = "malformed-input",
    /// A reference or `image` that does not parse.
    BadReference = "bad-reference",
    /// A record without what the step needs.
    MissingField = "missing-field",
    /// Something the step does not do (an OCI layout where a registry is needed).
    Unsupported = "unsupported",
    /// A setting that cannot work (a CA file that does not load).
    Usage = "usage",
    /// The tag or digest is not in the registry or layout.
    NotFound = "not-found",
    /// The registry (or key store) refused the credentials.
    Unauthorized = "unauthorized",
    /// Connection failed after bounded retries.
    RegistryUnreachable = "registry-unreachable",
    /// The registry answered an unexpected status after retries.
    RegistryError = "registry-error",
    /// Content did not hash to the digest claimed, or a tag moved.
    DigestMismatch = "digest-mismatch",
    /// An OCI layout that cannot be read.
    LayoutError = "layout-error",
    /// os-import: something the source had is missing at the target.
    IncompleteImport = "incomplete-import",
    /// os-import: a target tag names another digest (`--force` moves it).
    TagConflict = "tag-conflict",
    /// os-import --via acr-import: ACR's import operation failed or timed out (ARM's code in the message).
    ImportFailed = "import-failed",
    /// os-sign: the key could not sign (a vault error, a bad signature from it).
    KeyError = "key-error",
    /// os-verify: no `.sig` tag and no signature referrer.
    NoSignature = "no-signature",
    /// os-verify --attestation: no attestation of that type (signed, for the digest).
    NoAttestation = "no-attestation",
    /// os-verify: a signature that does not parse, or content that does not match its digest.
    MalformedSignature = "malformed-signature",
    /// os-verify: no signature verifies with the given key(s).
    KeyMismatch = "key-mismatch",
    /// os-verify: the signed docker-reference fails the identity policy.
    IdentityMismatch = "identity-mismatch",
    /// os-verify: a required annotation is missing or different.
    AnnotationMismatch = "annotation-mismatch",
    /// os-verify --attestation: the attestation's content fails a rule (the message names the rule and the finding).
    AttestationPolicy = "attestation-policy",
    /// os-deploy: no successful verify event for the record's image and digest.
    Unverified = "unverified",
    /// os-deploy: this record was fine, but another one stopped the batch.
    BatchRefused = "batch-refused",
    /// os-deploy: the record matches no container image.
    NoMatch = "no-match",
    /// os-deploy: one container matches records that pin different digests.
    ConflictingRecords = "conflicting-records",
    /// os-deploy: an image left in the manifests is not pinned by digest.
    UnpinnedImage = "unpinned-image",
    /// os-deploy: a manifest that cannot be read or parsed.
    BadManifest = "bad-manifest",
    /// os-deploy: `kubectl get` or `kubectl apply` failed.
    ApplyFailed = "apply-failed",
    /// os-deploy: the rollout failed; changed workloads were rolled back.
    RolloutFailed = "rollout-failed",
    /// os-deploy: the rollout did not finish in time; changed workloads were rolled back.
    RolloutTimeout = "rollout-timeout",
    /// os-deploy gitops: the change could not be committed; the repository is as it was.
    GitopsFailed = "gitops-failed",
    /// os-deploy gitops: the work tree has changes of its own; nothing was touched.
    DirtyWorktree = "dirty-worktree",
    /// os-deploy gitops: the remote refused the push; the repository is as it was.
    PushRejected = "push-rejected",
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&RegistryError> for ErrorCode {
    fn from(error: &RegistryError) -> ErrorCode {
        match error {
            RegistryError::Unreachable { .. } => ErrorCode::RegistryUnreachable,
            RegistryError::Unauthorized { .. } | RegistryError::Credentials(_) => ErrorCode::Unauthorized,
            RegistryError::NotFound { .. } => ErrorCode::NotFound,
            RegistryError::DigestMismatch { .. } => ErrorCode::DigestMismatch,
            RegistryError::Status { .. } | RegistryError::Protocol { .. } => ErrorCode::RegistryError,
            RegistryError::CaFile { .. } => ErrorCode::Usage,
        }
    }
}

impl From<&LayoutError> for ErrorCode {
    fn from(error: &LayoutError) -> ErrorCode {
        match error {
            LayoutError::TagNotFound { .. } | LayoutError::DigestNotFound { .. } => ErrorCode::NotFound,
            LayoutError::Corrupt { .. } | LayoutError::DigestMismatch { .. } => ErrorCode::DigestMismatch,
            _ => ErrorCode::LayoutError,
        }
    }
}

impl From<&StoreError> for ErrorCode {
    fn from(error: &StoreError) -> ErrorCode {
        match error {
            StoreError::Registry(error) => error.into(),
            StoreError::Layout(error) => error.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema's `error.code` enum and `docs/record.md`'s table name
    /// exactly the codes the tools can write.
    #[test]
    fn the_record_docs_list_every_code_and_no_other() {
        let docs = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs");
        let schema: serde_json::Value =
            serde_json::from_slice(&std::fs::read(format!("{docs}/record.schema.json")).unwrap()).unwrap();
        let listed: Vec<&str> = schema["properties"]["error"]["properties"]["code"]["enum"]
            .as_array()
            .expect("record.schema.json lists error.code as an enum")
            .iter()
            .map(|code| code.as_str().unwrap())
            .collect();
        let ours: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
        assert_eq!(listed, ours, "docs/record.schema.json error.code enum");

        let table = std::fs::read_to_string(format!("{docs}/record.md")).unwrap();
        for code in &ours {
            assert!(
                table.contains(&format!("| `{code}` |")),
                "docs/record.md has no row for {code}"
            );
        }
    }

    #[test]
    fn codes_are_kebab_case_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let text = code.as_str();
            assert!(
                text.split('-')
                    .all(|word| !word.is_empty() && word.bytes().all(|b| b.is_ascii_lowercase())),
                "{text}"
            );
            assert!(seen.insert(text), "{text} twice");
        }
    }
}
