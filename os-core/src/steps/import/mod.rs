//! `os-import`'s step: copy an artifact by digest — the exact manifest
//! bytes, every blob, every child of an index, and what is attached to it
//! (cosign's `.sig`/`.att`/`.sbom` tags and OCI 1.1 referrers) — between
//! registries and OCI layouts.
//!
//! Guarantees: blobs stream (a layer is never held whole) and are hashed
//! as they pass; a manifest is written only after everything it references
//! is at the target (children before the index), so a reader never sees a
//! dangling manifest; what the target already has is not sent again, and
//! within one registry blobs are mounted across repositories.
//!
//! Here: the step, its options and errors, and what a run shares. One
//! record's import is [`job`]; it copies a manifest tree ([`tree`]) blob by
//! blob ([`blobs`]), then carries what is attached ([`attachments`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use acr::ServerSide;
use indicatif::ProgressBar;
use tokio::sync::Semaphore;

use crate::azure::arm::ArmError;
use crate::oci::digest::Digest;
use crate::oci::layout::LayoutError;
use crate::oci::reference::RegistryRef;
use crate::oci::registry::{Referrers, RegistryError};
use crate::oci::store::{Place, StoreError, Stores};
use crate::pipeline::progress::Progress;
use crate::pipeline::{RunOptions, Step, Work};
use crate::record::Origin;
use crate::record::{ErrorCode, Record};

mod acr;
mod attachments;
mod blobs;
mod job;
mod tree;

pub use acr::{ACR_MANIFEST_LIMIT, ServerSideOptions, Via};

const STEP: &str = "import";

/// The binary whose step this is.
pub const TOOL: &str = "os-import";

/// Where `--to` / `--to-repo` send artifacts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// `--to REGISTRY`: same repository path; `--to REGISTRY/PREFIX`: the
    /// repository's last segment under PREFIX (`dev/onestream/iam` →
    /// `prod/onestream/iam` with `--to prod/onestream`).
    Registry { host: String, prefix: Option<String> },
    /// `--to-repo REGISTRY/REPOSITORY`: exactly there.
    Repository(RegistryRef),
    /// `--to oci:DIR`: an OCI layout (created if missing).
    Layout(String),
}

impl Destination {
    pub fn parse_to(text: &str) -> Result<Destination, String> {
        if let Some(dir) = text.strip_prefix("oci:") {
            return if dir.is_empty() {
                Err("--to oci: needs a directory".into())
            } else {
                Ok(Destination::Layout(dir.to_string()))
            };
        }
        let text = text.trim_end_matches('/');
        let (host, prefix) = match text.split_once('/') {
            Some((host, prefix)) => (host, Some(prefix.to_string())),
            None => (text, None),
        };
        // Validate with the reference grammar (a dummy leaf name).
        let probe = format!("{text}/x");
        let parsed: RegistryRef = probe.parse().map_err(|e| format!("--to {text:?}: {e}"))?;
        if parsed.registry != host {
            return Err(format!(
                "--to {text:?} must start with a registry host (with a dot or a port)"
            ));
        }
        Ok(Destination::Registry {
            host: host.to_string(),
            prefix,
        })
    }
}

#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub destination: Destination,
    /// Extra tags for the target (the record's own tag is applied too).
    pub tags: Vec<String>,
    /// Carry `.sig`/`.att`/`.sbom` tags and referrers (default).
    pub attachments: bool,
    /// `--platform`: copy only these platforms of an index (`os/arch` or
    /// `os/arch/variant`), making a new index with a new digest. Empty:
    /// every platform, digest preserved.
    pub platforms: Vec<String>,
    /// `--via` and what the server-side way needs.
    pub server_side: ServerSideOptions,
}

impl Importer {
    /// One run's importer: blob transfers across all records bounded by
    /// `--jobs`, a progress line unless `--quiet`. Under `--via
    /// acr-import`, Resource Manager settings that cannot work fail here.
    pub fn new(options: ImportOptions, run: &RunOptions) -> Result<Importer, ArmError> {
        Ok(Importer {
            server_side: ServerSide::new(options.server_side.clone())?,
            landed: Landed::default(),
            source_tags: SourceTags::default(),
            transfers: Semaphore::new(run.jobs),
            progress: Progress::for_stderr(run.quiet),
            options,
        })
    }
}

impl Step for Importer {
    const TOOL: &'static str = TOOL;
    const NAME: &'static str = STEP;

    async fn work(&self, stores: &Stores, origin: Origin, work: Work) -> Record {
        let record = crate::steps::digest::record_for(stores, TOOL, origin, work).await;
        if record.is_error() {
            return record;
        }
        self.import_record(stores, origin, record).await
    }
}

/// os-import's step, and what every record of one run shares.
pub struct Importer {
    options: ImportOptions,
    server_side: ServerSide,
    landed: Landed,
    source_tags: SourceTags,
    /// Blob transfers in flight across all records: `--jobs`.
    transfers: Semaphore,
    progress: Progress,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Arm(#[from] ArmError),
    #[error("{target} names {current}, not {wanted}: refusing to move the tag (--force moves it)")]
    TagConflict {
        target: String,
        current: Digest,
        wanted: Digest,
    },
    #[error("--via acr-import: {0}")]
    NotServerSide(String),
    #[error("blob {digest}: {detail}")]
    Blob { digest: Digest, detail: String },
    #[error("manifest {digest}: {detail}")]
    Manifest { digest: Digest, detail: String },
    #[error("after the copy, {what} is missing at the target")]
    Missing { what: String },
    #[error("no valid target repository: {0}")]
    BadTarget(#[from] crate::oci::reference::ReferenceError),
    #[error("blob {digest}: reading from {place} broke off: {detail}")]
    SourceBrokeOff {
        digest: Digest,
        place: String,
        detail: String,
    },
    #[error("{digest} has no platform {wanted} (it has: {available})")]
    NoPlatform {
        digest: Digest,
        wanted: String,
        available: String,
    },
}

impl From<StoreError> for ImportError {
    fn from(error: StoreError) -> ImportError {
        match error {
            StoreError::Registry(error) => ImportError::Registry(error),
            StoreError::Layout(error) => ImportError::Layout(error),
        }
    }
}

impl ImportError {
    fn code(&self) -> ErrorCode {
        match self {
            ImportError::Registry(error) => error.into(),
            ImportError::Layout(error) => error.into(),
            ImportError::Arm(error) => arm_code(error),
            ImportError::TagConflict { .. } => ErrorCode::TagConflict,
            ImportError::NotServerSide(_) => ErrorCode::Unsupported,
            ImportError::Blob { .. } | ImportError::Manifest { .. } => ErrorCode::DigestMismatch,
            ImportError::Missing { .. } => ErrorCode::IncompleteImport,
            ImportError::BadTarget(_) => ErrorCode::BadReference,
            ImportError::NoPlatform { .. } => ErrorCode::NotFound,
            ImportError::SourceBrokeOff { .. } => ErrorCode::RegistryUnreachable,
        }
    }
}

fn arm_code(error: &ArmError) -> ErrorCode {
    match error {
        ArmError::BadEndpoint(_) | ArmError::NoSubscription => ErrorCode::Usage,
        ArmError::Credential(_) | ArmError::Refused { .. } => ErrorCode::Unauthorized,
        ArmError::Unreachable { .. } => ErrorCode::RegistryUnreachable,
        ArmError::Failed { .. } | ArmError::TimedOut { .. } | ArmError::Protocol { .. } => {
            ErrorCode::ImportFailed
        }
    }
}

/// What one record's import did, counted while its blobs move
/// concurrently.
#[derive(Default)]
struct Stats {
    bytes: AtomicU64,
    copied: AtomicU64,
    mounted: AtomicU64,
    skipped: AtomicU64,
    manifests: AtomicU64,
}

fn count(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn total(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// One record's copy between two places: its counters and progress line,
/// and the run's shared limit on blob transfers (`--jobs`), which bounds
/// transfers across all records at once.
struct Copier<'a> {
    stores: &'a Stores,
    from: Place,
    to: Place,
    stats: Stats,
    progress: ProgressBar,
    transfers: &'a Semaphore,
    landed: &'a Landed,
    source_tags: &'a SourceTags,
}

/// Which repository of a target registry already received a blob in this
/// run, per (registry, digest); the lock also keeps two records from
/// sending the same blob at once: the second waits, then mounts.
#[derive(Default)]
struct Landed {
    blobs: Mutex<HashMap<(String, Digest), LandedIn>>,
}

/// The repository a blob landed in, once one did.
type LandedIn = Arc<tokio::sync::Mutex<Option<String>>>;

/// What was copied: the top manifest as it now exists at the target (its
/// bytes only when they were read: a re-run that finds it there reads
/// nothing).
struct Copied {
    manifest: Option<(Vec<u8>, String)>,
    digest: Digest,
}

/// The tags of each source repository, listed once per run (attachment
/// tags are then looked up only where they exist).
#[derive(Default)]
struct SourceTags {
    repositories: Mutex<HashMap<String, ListedTags>>,
}

/// A repository's tags once listed; `None` inside when the registry would
/// not list them.
type ListedTags = Arc<tokio::sync::OnceCell<Option<Arc<HashSet<String>>>>>;

/// What is attached to an image, as carried.
#[derive(Default)]
struct Attachments {
    /// Name and manifest digest of each.
    found: Vec<(String, Digest)>,
    /// Those this run wrote: the ones listed again at the target afterwards
    /// (the others were just seen there).
    written: Vec<(String, Digest)>,
    mechanism: Referrers,
}

#[cfg(test)]
mod tests {}
