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

use std::collections::{HashMap, HashSet};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt as _;
use indicatif::ProgressBar;
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::http::RetryPolicy;
use crate::oci::digest::{Digest, Hasher};
use crate::oci::layout::{Layout, LayoutError, off_thread};
use crate::oci::manifest;
use crate::oci::reference::{ImageRef, RegistryRef};
use crate::oci::registry::{Referrers, RegistryError};
use crate::oci::store::{Place, StoreError, Stores};
use crate::pipeline::progress::Progress;
use crate::pipeline::{RunOptions, Step, Work};
use crate::record::Origin;
use crate::record::{ErrorCode, Event, Record, field};

const STEP: &str = "import";

/// The binary whose step this is.
pub const TOOL: &str = "os-import";
/// cosign's attachment tags: signatures, attestations, SBOMs.
const ATTACHMENT_SUFFIXES: [&str; 3] = [".sig", ".att", ".sbom"];

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
}

impl Importer {
    /// One run's importer: blob transfers across all records bounded by
    /// `--jobs`, a progress line unless `--quiet`.
    pub fn new(options: ImportOptions, run: &RunOptions) -> Importer {
        Importer {
            landed: Landed::default(),
            source_tags: SourceTags::default(),
            transfers: Semaphore::new(run.jobs),
            progress: Progress::for_stderr(run.quiet),
            options,
        }
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
            ImportError::Blob { .. } | ImportError::Manifest { .. } => ErrorCode::DigestMismatch,
            ImportError::Missing { .. } => ErrorCode::IncompleteImport,
            ImportError::BadTarget(_) => ErrorCode::BadReference,
            ImportError::NoPlatform { .. } => ErrorCode::NotFound,
            ImportError::SourceBrokeOff { .. } => ErrorCode::RegistryUnreachable,
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

/// What went wrong on the source side of a streamed blob. The upload sees
/// only a broken body; this says whose fault it was.
enum SourceFault {
    /// The bytes did not hash to the digest (or were not the declared size).
    Mismatch(String),
    /// Reading from the source failed part-way.
    Read(String),
}

struct BlobCheck {
    hasher: Option<Hasher>,
    seen: u64,
    fault: Option<SourceFault>,
}

type FaultSlot = Arc<Mutex<BlobCheck>>;

/// Passes a blob's chunks through while hashing and counting them. The
/// check runs on the chunk that completes the declared size — an HTTP
/// client stops reading a body at its Content-Length, so a check after the
/// last chunk would never run — and a mismatch (or a read error from the
/// source) ends the stream with an error, so the upload fails instead of
/// committing. The returned slot says which it was.
fn verified(
    stream: impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    expected: Digest,
    size: u64,
    progress: ProgressBar,
) -> (
    impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    FaultSlot,
) {
    let slot = Arc::new(Mutex::new(BlobCheck {
        hasher: Some(Hasher::default()),
        seen: 0,
        fault: None,
    }));
    let checking = slot.clone();
    let body = stream.map(move |chunk| {
        let mut check = checking.lock().expect("blob check");
        let bytes = match chunk {
            Ok(bytes) => bytes,
            Err(error) => {
                check.fault = Some(SourceFault::Read(error.to_string()));
                return Err(error);
            }
        };
        check.seen += bytes.len() as u64;
        progress.inc(bytes.len() as u64);
        let mismatch = if check.seen > size {
            Some(format!("more than the {size} bytes declared"))
        } else {
            if let Some(hasher) = check.hasher.as_mut() {
                hasher.update(&bytes);
            }
            let complete = check.seen == size;
            match check.hasher.take_if(|_| complete).map(Hasher::finish) {
                Some(actual) if actual != expected => {
                    Some(format!("content hashes to {actual}, not {expected}"))
                }
                _ => None,
            }
        };
        match mismatch {
            Some(message) => {
                check.fault = Some(SourceFault::Mismatch(message.clone()));
                Err(std::io::Error::other(message))
            }
            None => Ok(bytes),
        }
    });
    let ending = slot.clone();
    let short = futures::stream::once(async move {
        let mut check = ending.lock().expect("blob check");
        (check.fault.is_none() && check.seen < size).then(|| {
            let message = format!("the source sent {} of {size} bytes", check.seen);
            check.fault = Some(SourceFault::Mismatch(message.clone()));
            Err(std::io::Error::other(message))
        })
    })
    .filter_map(futures::future::ready);
    (body.chain(short), slot)
}

/// Transfers of one blob before giving up on transient faults (a
/// connection reset mid-body restarts the whole transfer; the registry
/// discards the unfinished upload). Each request of a transfer has its own
/// retries in the registry client already, so these are few and slower.
const BLOB_TRANSFERS: RetryPolicy = RetryPolicy {
    attempts: 3,
    budget: std::time::Duration::from_secs(120),
    base_delay: std::time::Duration::from_millis(400),
    max_delay: std::time::Duration::from_secs(10),
};

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

impl Landed {
    fn cell(&self, registry: &str, digest: &Digest) -> LandedIn {
        self.blobs
            .lock()
            .expect("landed blobs poisoned")
            .entry((registry.to_string(), digest.clone()))
            .or_default()
            .clone()
    }
}

/// What was copied: the top manifest as it now exists at the target (its
/// bytes only when they were read: a re-run that finds it there reads
/// nothing).
struct Copied {
    manifest: Option<(Vec<u8>, String)>,
    digest: Digest,
}

impl Copier<'_> {
    /// Counts a finished blob and shows the counts on the progress line.
    fn blob_done(&self, counter: &AtomicU64) {
        count(counter, 1);
        let stats = &self.stats;
        self.progress.set_message(format!(
            "blobs: {} copied, {} mounted, {} skipped",
            total(&stats.copied),
            total(&stats.mounted),
            total(&stats.skipped)
        ));
    }

    async fn copy_blob(&self, digest: &Digest, size: u64) -> Result<(), ImportError> {
        // Held for the HEAD too: a check is a request like any other.
        let _slot = self
            .transfers
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let target = match &self.to {
            Place::Registry(target) => Some(target),
            Place::Layout(_) => None,
        };
        let cell = target.map(|target| self.landed.cell(&target.registry, digest));
        let mut landed = match &cell {
            Some(cell) => Some(cell.lock().await),
            None => None,
        };
        // Another repository of the target registry got it in this run
        // (shared base layers): mount it from there instead of sending it,
        // without asking first — a mount of a blob the repository has
        // already succeeds too.
        if let (Some(landed), Some(target)) = (landed.as_ref(), target)
            && let Some(repository) = landed.as_deref()
            && repository != target.repository
        {
            let holder = RegistryRef {
                repository: repository.to_string(),
                ..target.clone()
            };
            if self.stores.registry().mount_blob(target, &holder, digest).await? {
                self.blob_done(&self.stats.mounted);
                return Ok(());
            }
        }
        if self.to.has_blob(self.stores, digest).await? {
            self.blob_done(&self.stats.skipped);
            if let (Some(landed), Some(target)) = (landed.as_mut(), target) {
                **landed = Some(target.repository.clone());
            }
            return Ok(());
        }
        let mut attempts = BLOB_TRANSFERS.start();
        let outcome = loop {
            let outcome = self.transfer_blob(digest, size).await;
            let asked = match &outcome {
                Err(ImportError::SourceBrokeOff { .. }) => Some(None),
                Err(ImportError::Registry(RegistryError::Unreachable { .. })) => Some(None),
                Err(ImportError::Registry(RegistryError::Status {
                    status: 429 | 500..,
                    retry_after,
                    ..
                })) => Some(*retry_after),
                _ => None,
            };
            let why = match &outcome {
                Err(error) => format!("blob {digest}: {error}; transfer {} failed", attempts.number()),
                Ok(()) => String::new(),
            };
            match asked {
                Some(asked) if attempts.retry(asked, why).await => {}
                _ => break outcome,
            }
        };
        if let (Ok(()), Some(landed), Some(target)) = (&outcome, landed.as_mut(), target) {
            **landed = Some(target.repository.clone());
        }
        outcome
    }

    /// Streams a blob from `from` (a registry or a layout, named for
    /// errors) to the target registry, hashed on the way; a fault on the
    /// source side is reported as the source's.
    async fn upload_checked(
        &self,
        target: &RegistryRef,
        digest: &Digest,
        size: u64,
        stream: impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
        from: &str,
    ) -> Result<(), ImportError> {
        let (body, check) = verified(stream, digest.clone(), size, self.progress.clone());
        let uploaded = self
            .stores
            .registry()
            .upload_blob_stream(target, digest, size, body)
            .await;
        source_fault(&check, digest, from)?;
        Ok(uploaded?)
    }

    async fn transfer_blob(&self, digest: &Digest, size: u64) -> Result<(), ImportError> {
        let blob_error = |detail: String| ImportError::Blob {
            digest: digest.clone(),
            detail,
        };
        let registry = self.stores.registry();
        match (&self.from, &self.to) {
            (Place::Registry(source), Place::Registry(target)) => {
                if source.registry == target.registry
                    && source.repository != target.repository
                    && registry.mount_blob(target, source, digest).await?
                {
                    self.blob_done(&self.stats.mounted);
                    return Ok(());
                }
                let stream = registry.blob_stream(source, digest).await?;
                let from = format!("registry {}", source.registry);
                self.upload_checked(target, digest, size, stream, &from).await?;
            }
            (Place::Layout(source), Place::Registry(target)) => {
                let path = source.blob_path(digest);
                let file = tokio::fs::File::open(&path)
                    .await
                    .map_err(|e| blob_error(format!("{}: {e}", path.display())))?;
                let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
                let from = format!("layout {}", path.display());
                self.upload_checked(target, digest, size, stream, &from).await?;
            }
            (Place::Registry(source), Place::Layout(target)) => {
                let stream = registry.blob_stream(source, digest).await?;
                let progress = self.progress.clone();
                let stream = stream.inspect(move |chunk| {
                    if let Ok(bytes) = chunk {
                        progress.inc(bytes.len() as u64);
                    }
                });
                let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
                let (target, expected) = (target.clone(), digest.clone());
                off_thread(move || target.write_blob(&expected, reader)).await?;
            }
            (Place::Layout(source), Place::Layout(target)) => {
                let (source, target, expected) = (source.clone(), target.clone(), digest.clone());
                off_thread(move || {
                    let file = source.open_blob(&expected)?;
                    target.write_blob(&expected, file)
                })
                .await?;
                self.progress.inc(size);
            }
        }
        self.blob_done(&self.stats.copied);
        count(&self.stats.bytes, size);
        Ok(())
    }

    /// Copies the manifest `digest` and everything it references, children
    /// first, unless the target has it already (one HEAD; a manifest is
    /// only ever pushed after all it names, so its presence means the whole
    /// tree's). `known` are its bytes when the caller read them already.
    /// Returns its bytes and media type when it had to copy, `None` when
    /// the target had it.
    async fn copy_tree(
        &self,
        digest: &Digest,
        known: Option<Vec<u8>>,
    ) -> Result<Option<(Vec<u8>, String)>, ImportError> {
        if self.to.has_manifest(self.stores, digest).await? {
            return Ok(None);
        }
        self.copy_tree_as(digest, known, None).await.map(Some)
    }

    /// [`Copier::copy_tree`] without asking the target first (the caller
    /// knows it lacks the manifest, or asked under a tag already): the
    /// children or blobs, then the manifest itself, pushed under `tag` when
    /// given — one PUT both stores and tags it — or by digest.
    async fn copy_tree_as(
        &self,
        digest: &Digest,
        known: Option<Vec<u8>>,
        tag: Option<&str>,
    ) -> Result<(Vec<u8>, String), ImportError> {
        let (bytes, media_type) = match known {
            Some(bytes) => {
                let media_type = media_type_of(&bytes, digest)?;
                (bytes, media_type)
            }
            None => self.source_manifest(digest).await?,
        };
        if manifest::is_index(&media_type) {
            let children = index_children(&bytes, &media_type);
            futures::future::try_join_all(children.iter().map(|child| Box::pin(self.copy_tree(child, None))))
                .await?;
        } else {
            let blobs = manifest_blobs(&bytes, digest)?;
            futures::future::try_join_all(blobs.iter().map(|(blob, size)| self.copy_blob(blob, *size)))
                .await?;
        }
        self.to
            .put_manifest(self.stores, &bytes, &media_type, tag)
            .await?;
        count(&self.stats.manifests, 1);
        Ok((bytes, media_type))
    }

    /// A source manifest's bytes (checked against `digest`) and media type.
    async fn source_manifest(&self, digest: &Digest) -> Result<(Vec<u8>, String), ImportError> {
        let bytes = self.from.manifest(self.stores, digest).await?;
        let media_type = media_type_of(&bytes, digest)?;
        Ok((bytes, media_type))
    }

    /// The bytes and media type of what was copied, read from the source
    /// if the copy did not need them.
    async fn manifest_of(&self, copied: &mut Copied) -> Result<(Vec<u8>, String), ImportError> {
        if copied.manifest.is_none() {
            copied.manifest = Some(self.source_manifest(&copied.digest).await?);
        }
        Ok(copied.manifest.clone().expect("just filled"))
    }

    /// Copies only the platforms asked for: an index becomes a new index
    /// listing just those children (their bytes unchanged), so its digest
    /// differs unless every platform was asked for; a single-platform image
    /// is copied as it is if its config names a wanted platform.
    async fn copy_platforms(&self, digest: &Digest, wanted: &[String]) -> Result<Copied, ImportError> {
        let (bytes, media_type) = self.source_manifest(digest).await?;
        let unchanged = |bytes: Vec<u8>, media_type: String| Copied {
            manifest: Some((bytes, media_type)),
            digest: digest.clone(),
        };
        let no_platform = |available: Vec<String>| ImportError::NoPlatform {
            digest: digest.clone(),
            wanted: wanted.join(", "),
            available: available.join(", "),
        };
        if !manifest::is_index(&media_type) {
            let config = manifest_config(&bytes, digest)?;
            let config = self.from.blob(self.stores, &config).await?;
            let platform: manifest::Platform =
                serde_json::from_slice(&config).map_err(|e| ImportError::Manifest {
                    digest: digest.clone(),
                    detail: format!("its config names no platform: {e}"),
                })?;
            if !wanted.iter().any(|w| platform_matches(w, &platform)) {
                return Err(no_platform(vec![platform.spelled()]));
            }
            self.copy_tree(digest, Some(bytes.clone())).await?;
            return Ok(unchanged(bytes, media_type));
        }
        let mut index: Value = serde_json::from_slice(&bytes).map_err(|e| ImportError::Manifest {
            digest: digest.clone(),
            detail: e.to_string(),
        })?;
        let entries = manifest::index_entries(&bytes).unwrap_or_default();
        let kept = manifest::entries_for_platforms(&entries, |platform| {
            wanted.iter().any(|w| platform_matches(w, platform))
        });
        if kept.iter().all(|entry| manifest::entry_platform(entry).is_none()) {
            let available = manifest::summarize(&bytes, None)
                .map(|s| s.platforms)
                .unwrap_or_default();
            return Err(no_platform(available));
        }
        if kept.len() == entries.len() {
            self.copy_tree(digest, Some(bytes.clone())).await?;
            return Ok(unchanged(bytes, media_type));
        }
        let children: Vec<Digest> = kept.iter().filter_map(manifest::descriptor_digest).collect();
        index["manifests"] = Value::Array(kept);
        let narrowed = serde_json::to_vec(&index).expect("a JSON value serialises");
        futures::future::try_join_all(children.iter().map(|child| self.copy_tree(child, None))).await?;
        self.to
            .put_manifest(self.stores, &narrowed, &media_type, None)
            .await?;
        count(&self.stats.manifests, 1);
        Ok(Copied {
            digest: Digest::of(&narrowed),
            manifest: Some((narrowed, media_type)),
        })
    }

    /// Copies cosign's attachment tags and OCI 1.1 referrers of `digest`,
    /// all at once; returns what was attached (name and manifest digest)
    /// and how the source offered referrers.
    async fn copy_attachments(&self, digest: &Digest) -> Result<Attachments, ImportError> {
        let listed = self.source_tags.of(self.stores, &self.from).await?;
        let may_exist = |tag: &str| listed.as_ref().is_none_or(|tags| tags.contains(tag));
        let tags = ATTACHMENT_SUFFIXES
            .iter()
            .map(|suffix| format!("{}{suffix}", digest.tag_form()))
            .filter(|tag| may_exist(tag))
            .map(|tag| self.copy_attachment_tag(tag, listed.is_some()));
        let (tagged, referrers) = futures::try_join!(
            futures::future::try_join_all(tags),
            self.copy_referrers(digest, may_exist(&digest.tag_form())),
        )?;
        let mut attachments = Attachments::default();
        for (tag, attachment, written) in tagged.into_iter().flatten() {
            attachments.add(tag, attachment, written);
        }
        attachments.mechanism = referrers.mechanism;
        attachments.extend(referrers);
        Ok(attachments)
    }

    /// Copies one cosign attachment tag (`sha256-<hex>.sig`, …) unless the
    /// target's tag names the same manifest. Returns the tag, the manifest's
    /// digest and whether it was written; `None` when the source has no
    /// such tag. When the source's tags were listed (the tag exists), the
    /// target is asked at the same time as the source.
    async fn copy_attachment_tag(
        &self,
        tag: String,
        listed: bool,
    ) -> Result<Option<(String, Digest, bool)>, ImportError> {
        let (stores, from, to) = (self.stores, &self.from, &self.to);
        let (source, there) = if listed {
            let (source, there) = futures::try_join!(from.tagged(stores, &tag), to.tag_digest(stores, &tag))?;
            (source, Some(there))
        } else {
            (from.tagged(stores, &tag).await?, None)
        };
        let Some(bytes) = source else {
            return Ok(None);
        };
        let attachment = Digest::of(&bytes);
        let there = match there {
            Some(there) => there,
            None => to.tag_digest(stores, &tag).await?,
        };
        // The target's tag already names it: it is there, with all it
        // references (a tag is only ever set after what it names).
        if there.as_ref() == Some(&attachment) {
            return Ok(Some((tag, attachment, false)));
        }
        self.copy_tree_as(&attachment, Some(bytes), Some(&tag)).await?;
        Ok(Some((tag, attachment, true)))
    }

    async fn target_has_referrers_api(&self, digest: &Digest) -> Result<bool, ImportError> {
        Ok(match &self.to {
            Place::Registry(r) => self.stores.registry().has_referrers_api(r, digest).await?,
            Place::Layout(_) => false,
        })
    }

    /// Copies the OCI 1.1 referrers of `digest` and the tag-fallback index
    /// listing them — the source's, or one made from its Referrers API's
    /// answer for a target without the API — merged with the target's own.
    /// `fallback_may_exist` is false when the source's tag list lacks the
    /// `sha256-<hex>` tag.
    async fn copy_referrers(
        &self,
        digest: &Digest,
        fallback_may_exist: bool,
    ) -> Result<Attachments, ImportError> {
        let (stores, from, to) = (self.stores, &self.from, &self.to);
        let fallback_tag = digest.tag_form();
        let api_absent = match from {
            Place::Registry(r) => stores.registry().lacks_referrers_api(&r.registry),
            Place::Layout(_) => true,
        };
        if api_absent && !fallback_may_exist {
            return Ok(Attachments::default());
        }
        // A source known to list referrers by its tag fallback: the target's
        // fallback tag is asked at the same time.
        let (listing, asked) = if api_absent {
            let (listing, there) = futures::try_join!(
                from.referrers(stores, digest),
                to.tag_digest(stores, &fallback_tag)
            )?;
            (listing, Some(there))
        } else {
            (from.referrers(stores, digest).await?, None)
        };
        // Referrers a source's Referrers API lists reach a target without
        // the API (a layout, an older registry) only through a tag-fallback
        // index: one is written there, as for a source that had one.
        let index = match listing.fallback {
            Some(index) => Some(index),
            None if !listing.entries.is_empty() && !self.target_has_referrers_api(digest).await? => {
                Some(manifest::referrers_index(&listing.entries))
            }
            None => None,
        };
        let target_index = match (&index, asked) {
            (Some(_), Some(there)) => there,
            (Some(_), None) => to.tag_digest(stores, &fallback_tag).await?,
            (None, _) => None,
        };
        // An equal tag-fallback index at the target lists referrers that are
        // all there (the index is written after its members).
        let index_there = index
            .as_ref()
            .is_some_and(|index| target_index == Some(Digest::of(index)));
        let referrers: Vec<Digest> = listing
            .entries
            .iter()
            .filter_map(manifest::descriptor_digest)
            .collect();
        // A target with no fallback index at all has none of these
        // referrers listed: they are copied without asking for each first
        // (pushing a manifest it has by chance is harmless; its blobs are
        // still asked for).
        let none_listed = index.is_some() && target_index.is_none();
        let written = futures::future::try_join_all(referrers.iter().map(|referrer| async move {
            Ok::<_, ImportError>(match (index_there, none_listed) {
                (true, _) => false,
                (false, true) => {
                    self.copy_tree_as(referrer, None, None).await?;
                    true
                }
                (false, false) => self.copy_tree(referrer, None).await?.is_some(),
            })
        }))
        .await?;
        let mut attachments = Attachments {
            mechanism: listing.mechanism,
            ..Attachments::default()
        };
        for (referrer, written) in referrers.into_iter().zip(written) {
            attachments.add(format!("referrer {referrer}"), referrer, written);
        }
        // Registries without the Referrers API (and layouts) find referrers
        // through the tag-fallback index: carry it, after its members.
        if !listing.entries.is_empty()
            && !index_there
            && let Some(index) = index
        {
            // Referrers attached at the target alone stay listed.
            let existing = match target_index {
                Some(_) => to.tagged(stores, &fallback_tag).await?,
                None => None,
            };
            let index = match existing {
                Some(existing) => merged_index(&index, &existing),
                None => index,
            };
            to.put_manifest(stores, &index, manifest::OCI_INDEX, Some(&fallback_tag))
                .await?;
        }
        Ok(attachments)
    }
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

impl SourceTags {
    async fn of(&self, stores: &Stores, place: &Place) -> Result<Option<Arc<HashSet<String>>>, ImportError> {
        let Place::Registry(repository) = place else {
            return Ok(None);
        };
        let cell = self
            .repositories
            .lock()
            .expect("source tags poisoned")
            .entry(format!("{}/{}", repository.registry, repository.repository))
            .or_default()
            .clone();
        let listed = cell
            .get_or_try_init(|| async {
                let tags = place.tags(stores).await?;
                Ok::<_, ImportError>(tags.map(|tags| Arc::new(tags.into_iter().collect())))
            })
            .await?;
        Ok(listed.clone())
    }
}

/// The source's tag-fallback index plus the entries only the target's
/// lists (its own referrers); the source's bytes when there are none.
fn merged_index(source: &[u8], target: &[u8]) -> Vec<u8> {
    let (Ok(mut merged), Ok(theirs)) = (
        serde_json::from_slice::<Value>(source),
        manifest::index_entries(target),
    ) else {
        return source.to_vec();
    };
    let ours: HashSet<Digest> = manifest::index_entries(source)
        .unwrap_or_default()
        .iter()
        .filter_map(manifest::descriptor_digest)
        .collect();
    let extra: Vec<Value> = theirs
        .into_iter()
        .filter(|entry| manifest::descriptor_digest(entry).is_some_and(|d| !ours.contains(&d)))
        .collect();
    match merged.get_mut("manifests").and_then(Value::as_array_mut) {
        Some(entries) if !extra.is_empty() => entries.extend(extra),
        _ => return source.to_vec(),
    }
    serde_json::to_vec(&merged).expect("a JSON value serialises")
}

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

impl Attachments {
    fn add(&mut self, name: String, digest: Digest, written: bool) {
        if written {
            self.written.push((name.clone(), digest.clone()));
        }
        self.found.push((name, digest));
    }

    fn extend(&mut self, other: Attachments) {
        self.found.extend(other.found);
        self.written.extend(other.written);
    }
}

/// The source's part in a failed (or, for a short or corrupt body, even a
/// seemingly finished) upload: its fault, named, wins over what the target
/// said about the broken body.
fn source_fault(check: &FaultSlot, digest: &Digest, source: &str) -> Result<(), ImportError> {
    match check.lock().expect("blob check").fault.take() {
        None => Ok(()),
        Some(SourceFault::Mismatch(detail)) => Err(ImportError::Blob {
            digest: digest.clone(),
            detail: format!("from {source}: {detail}"),
        }),
        Some(SourceFault::Read(detail)) => Err(ImportError::SourceBrokeOff {
            digest: digest.clone(),
            place: source.to_string(),
            detail,
        }),
    }
}

/// `os/arch` matches any variant of that architecture (as `docker pull
/// --platform linux/arm64` takes `linux/arm64/v8`); `os/arch/variant`
/// matches only that variant.
fn platform_matches(wanted: &str, platform: &manifest::Platform) -> bool {
    wanted == platform.spelled() || wanted == format!("{}/{}", platform.os, platform.architecture)
}

fn media_type_of(bytes: &[u8], digest: &Digest) -> Result<String, ImportError> {
    manifest::summarize(bytes, None)
        .map(|summary| summary.media_type)
        .map_err(|e| ImportError::Manifest {
            digest: digest.clone(),
            detail: e.to_string(),
        })
}

/// The blobs an image manifest references (config first), with sizes.
fn manifest_blobs(bytes: &[u8], digest: &Digest) -> Result<Vec<(Digest, u64)>, ImportError> {
    let parsed: Value = serde_json::from_slice(bytes).map_err(|e| ImportError::Manifest {
        digest: digest.clone(),
        detail: e.to_string(),
    })?;
    let descriptor = |value: &Value| -> Option<(Digest, u64)> {
        Some((manifest::descriptor_digest(value)?, value.get("size")?.as_u64()?))
    };
    let config = parsed.get("config").into_iter();
    let layers = parsed["layers"].as_array().into_iter().flatten();
    Ok(config.chain(layers).filter_map(descriptor).collect())
}

fn manifest_config(bytes: &[u8], digest: &Digest) -> Result<Digest, ImportError> {
    manifest_blobs(bytes, digest)?
        .into_iter()
        .next()
        .map(|(config, _)| config)
        .ok_or_else(|| ImportError::Manifest {
            digest: digest.clone(),
            detail: "it has no config".into(),
        })
}

/// The child manifests of an index (none for an image manifest).
fn index_children(bytes: &[u8], media_type: &str) -> Vec<Digest> {
    if !manifest::is_index(media_type) {
        return Vec::new();
    }
    manifest::index_entries(bytes)
        .unwrap_or_default()
        .iter()
        .filter_map(manifest::descriptor_digest)
        .collect()
}

fn target_of(
    destination: &Destination,
    source: &ImageRef,
    service: Option<&str>,
) -> Result<ImageRef, ImportError> {
    let leaf = |repository: &str| repository.rsplit('/').next().unwrap_or(repository).to_string();
    let path = match source {
        ImageRef::Registry(r) => r.repository.clone(),
        ImageRef::Layout(_) => service
            .map(str::to_string)
            .unwrap_or_else(|| source.last_segment().to_string()),
    };
    let reference = match destination {
        Destination::Layout(dir) => return Ok(format!("oci:{dir}").parse().expect("oci: references parse")),
        Destination::Repository(r) => return Ok(ImageRef::Registry(r.with(None))),
        Destination::Registry { host, prefix: None } => format!("{host}/{path}"),
        Destination::Registry {
            host,
            prefix: Some(prefix),
        } => format!("{host}/{prefix}/{}", leaf(&path)),
    };
    Ok(reference.parse()?)
}

impl Importer {
    async fn import_record(&self, stores: &Stores, origin: Origin, mut record: Record) -> Record {
        let options = &self.options;
        let fail = |mut record: Record, code: ErrorCode, message: String| {
            record.fail(STEP, code, format!("{origin}: {message}"));
            record
        };
        let Some(image) = record.image().map(str::to_string) else {
            return fail(record, ErrorCode::MissingField, "record has no \"image\"".into());
        };
        let digest = match record.digest() {
            Ok(Some(digest)) => digest,
            _ => {
                return fail(
                    record,
                    ErrorCode::MissingField,
                    "record has no \"digest\": run os-digest first".into(),
                );
            }
        };
        let source: ImageRef = match image.parse() {
            Ok(source) => source,
            Err(error) => {
                return fail(
                    record,
                    ErrorCode::BadReference,
                    format!("field \"image\": {error}"),
                );
            }
        };
        let target = match target_of(&options.destination, &source, record.get_str(field::SERVICE)) {
            Ok(target) => target,
            Err(error) => return fail(record, ErrorCode::BadReference, error.to_string()),
        };
        if let Destination::Layout(dir) = &options.destination
            && let Err(error) = Layout::create(dir)
        {
            return fail(record, (&error).into(), error.to_string());
        }
        let started = Instant::now();
        let mut tags: Vec<String> = record
            .get_str(field::TAG)
            .map(str::to_string)
            .into_iter()
            .collect();
        tags.extend(options.tags.iter().cloned());
        // sha256: and 12 hex digits, as docker shows image IDs.
        let label = format!("{}@{}", source.last_segment(), &digest.to_string()[..19]);
        let progress = self.progress.bytes(&label);
        let copy = async {
            let copier = Copier {
                stores,
                from: Place::of(&source)?,
                to: Place::of(&target)?,
                stats: Stats::default(),
                progress: progress.clone(),
                transfers: &self.transfers,
                landed: &self.landed,
                source_tags: &self.source_tags,
            };
            let to = &copier.to;
            let names_for = |named: &Digest| {
                let mut names = tags.clone();
                if matches!(to, Place::Layout(_)) && tags.is_empty() {
                    // A layout lists only what index.json names: name it by digest.
                    names.push(named.tag_form());
                }
                names
            };
            let mut names = names_for(&digest);
            // How many of `names` (from the first) name the digest already.
            let mut named = 0;
            let mut copied = if options.platforms.is_empty() {
                let first = names.first().map(String::as_str);
                // A tag already naming the digest vouches for the whole tree
                // (a tag is only ever set after what it names): a re-run
                // costs one HEAD. Otherwise the tree is copied and pushed
                // under the first name, one PUT that stores and tags it.
                let (manifest, first_named) = match first {
                    Some(name) if to.tag_points_to(stores, name, &digest).await? => (None, true),
                    _ if to.has_manifest(stores, &digest).await? => (None, false),
                    _ => (
                        Some(copier.copy_tree_as(&digest, None, first).await?),
                        first.is_some(),
                    ),
                };
                named = usize::from(first_named);
                Copied {
                    manifest,
                    digest: digest.clone(),
                }
            } else {
                let copied = copier.copy_platforms(&digest, &options.platforms).await?;
                names = names_for(&copied.digest);
                copied
            };
            for name in names.iter().skip(named) {
                if !to.tag_points_to(stores, name, &copied.digest).await? {
                    let (bytes, media_type) = copier.manifest_of(&mut copied).await?;
                    to.put_manifest(stores, &bytes, &media_type, Some(name)).await?;
                }
            }
            let mut attachments = Attachments::default();
            if options.attachments {
                if copied.digest == digest {
                    attachments = copier.copy_attachments(&digest).await?;
                } else {
                    tracing::warn!(
                        "{source}@{digest}: --platform made a new index {}; what is attached to {digest} \
                         (its signatures among it) does not apply to it and was left behind: sign it again",
                        copied.digest
                    );
                }
                // Platform images of an index are signed and attested too
                // (cosign sign --recursive, per-platform SBOMs). The record
                // says whether it is an index; read the manifest only when
                // it does not.
                let known_type = match &copied.manifest {
                    Some((_, media_type)) => Some(media_type.as_str()),
                    None => record.get_str(field::MEDIA_TYPE),
                };
                let maybe_index = known_type.is_none_or(manifest::is_index);
                if maybe_index {
                    let (bytes, media_type) = copier.manifest_of(&mut copied).await?;
                    let children = index_children(&bytes, &media_type);
                    let of_children = futures::future::try_join_all(
                        children.iter().map(|child| copier.copy_attachments(child)),
                    )
                    .await?;
                    for child_attachments in of_children {
                        attachments.extend(child_attachments);
                    }
                }
            }
            // Listed again: what this run attached must now be at the target.
            let listed_again = attachments
                .written
                .iter()
                .map(|(what, attached_digest)| async move {
                    Ok::<_, ImportError>((what, to.has_manifest(stores, attached_digest).await?))
                });
            for (what, there) in futures::future::try_join_all(listed_again).await? {
                if !there {
                    return Err(ImportError::Missing { what: what.clone() });
                }
            }
            let target_mechanism = if copier.target_has_referrers_api(&copied.digest).await? {
                "referrers-api"
            } else {
                "tag-fallback"
            };
            Ok::<_, ImportError>((copier.stats, copied, attachments, target_mechanism))
        };
        let (stats, copied, attachments, target_mechanism) = match copy.await {
            Ok(outcome) => outcome,
            Err(error) => {
                progress.abandon_with_message("failed");
                return fail(
                    record,
                    error.code(),
                    format!("importing {source}@{digest} to {target}: {error}"),
                );
            }
        };
        progress.finish_with_message(format!(
            "-> {}: {} blobs copied, {} mounted, {} skipped",
            target.location(),
            total(&stats.copied),
            total(&stats.mounted),
            total(&stats.skipped)
        ));
        record.set(field::IMAGE, target.location());
        let mut event = Event::new(STEP, TOOL)
            .with("from", source.location())
            .with("to", target.location())
            .with("bytes", total(&stats.bytes))
            .with("blobsCopied", total(&stats.copied))
            .with("blobsMounted", total(&stats.mounted))
            .with("blobsSkipped", total(&stats.skipped))
            .with("manifests", total(&stats.manifests))
            .with(
                "attached",
                attachments
                    .found
                    .into_iter()
                    .map(|(what, _)| what)
                    .collect::<Vec<_>>(),
            )
            .with("targetReferrers", target_mechanism)
            .with("sourceReferrers", attachments.mechanism.label())
            .with("durationMs", started.elapsed().as_millis() as u64);
        if let (false, Some((bytes, _))) = (copied.digest == digest, &copied.manifest) {
            // Asked for with --platform and --allow-digest-change: the record
            // now names the narrowed index, and the event says where it came from.
            let platforms = manifest::summarize(bytes, None)
                .map(|s| s.platforms)
                .unwrap_or_default();
            record.set(field::DIGEST, copied.digest.to_string());
            record.set(field::SIZE, bytes.len() as u64);
            record.set(field::PLATFORMS, platforms.clone());
            event = event
                .with("sourceDigest", digest.to_string())
                .with("platforms", platforms);
        }
        record.push_event(event);
        record
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_target_fallback_index_keeps_its_own_referrers() {
        let d = |n: u8| format!("sha256:{}", format!("{n:02x}").repeat(32));
        let index = |digests: &[String]| {
            let entries: Vec<_> = digests.iter().map(|d| serde_json::json!({"digest": d})).collect();
            serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": entries})).unwrap()
        };
        let source = index(&[d(1), d(2)]);
        let merged = super::merged_index(&source, &index(&[d(2), d(3)]));
        let listed: Vec<_> = crate::oci::manifest::index_entries(&merged)
            .unwrap()
            .iter()
            .map(|e| e["digest"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(listed, [d(1), d(2), d(3)]);
        assert_eq!(
            super::merged_index(&source, &index(&[d(1)])),
            source,
            "nothing to add"
        );
    }
}
