//! Copying one blob: mounted when another repository of the target got it
//! in this run, skipped when the target has it, else streamed from the
//! source and hashed on the way, with whole transfers retried when one
//! breaks off.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt as _;
use indicatif::ProgressBar;

use super::{Copier, ImportError, Landed, LandedIn, count, total};
use crate::http::RetryPolicy;
use crate::oci::digest::{Digest, Hasher};
use crate::oci::layout::off_thread;
use crate::oci::reference::RegistryRef;
use crate::oci::registry::RegistryError;
use crate::oci::store::Place;

/// What went wrong on the source side of a streamed blob. The upload sees
/// only a broken body; this says whose fault it was.
pub(super) enum SourceFault {
    /// The bytes did not hash to the digest (or were not the declared size).
    Mismatch(String),
    /// Reading from the source failed part-way.
    Read(String),
}

pub(super) struct BlobCheck {
    hasher: Option<Hasher>,
    seen: u64,
    fault: Option<SourceFault>,
}

pub(super) type FaultSlot = Arc<Mutex<BlobCheck>>;

/// Transfers of one blob before giving up on transient faults (a
/// connection reset mid-body restarts the whole transfer; the registry
/// discards the unfinished upload). Each request of a transfer has its own
/// retries in the registry client already, so these are few and slower.
pub(super) const BLOB_TRANSFERS: RetryPolicy = RetryPolicy {
    attempts: 3,
    budget: std::time::Duration::from_secs(120),
    base_delay: std::time::Duration::from_millis(400),
    max_delay: std::time::Duration::from_secs(10),
};

impl Landed {
    pub(super) fn cell(&self, registry: &str, digest: &Digest) -> LandedIn {
        self.blobs
            .lock()
            .expect("landed blobs poisoned")
            .entry((registry.to_string(), digest.clone()))
            .or_default()
            .clone()
    }
}

impl Copier<'_> {
    /// Counts a finished blob and shows the counts on the progress line.
    pub(super) fn blob_done(&self, counter: &AtomicU64) {
        count(counter, 1);
        let stats = &self.stats;
        self.progress.set_message(format!(
            "blobs: {} copied, {} mounted, {} skipped",
            total(&stats.copied),
            total(&stats.mounted),
            total(&stats.skipped)
        ));
    }

    pub(super) async fn copy_blob(&self, digest: &Digest, size: u64) -> Result<(), ImportError> {
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
    pub(super) async fn upload_checked(
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

    pub(super) async fn transfer_blob(&self, digest: &Digest, size: u64) -> Result<(), ImportError> {
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
}

/// Passes a blob's chunks through while hashing and counting them. The
/// check runs on the chunk that completes the declared size — an HTTP
/// client stops reading a body at its Content-Length, so a check after the
/// last chunk would never run — and a mismatch (or a read error from the
/// source) ends the stream with an error, so the upload fails instead of
/// committing. The returned slot says which it was.
pub(super) fn verified(
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

/// The source's part in a failed (or, for a short or corrupt body, even a
/// seemingly finished) upload: its fault, named, wins over what the target
/// said about the broken body.
pub(super) fn source_fault(check: &FaultSlot, digest: &Digest, source: &str) -> Result<(), ImportError> {
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
