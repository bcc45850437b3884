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

use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt as _;
use serde_json::Value;

use crate::cli::{CommonArgs, RunError};
use crate::digest::{Digest, Hasher};
use crate::layout::{Layout, LayoutError, off_thread};
use crate::manifest;
use crate::record::{Event, Record, field};
use crate::reference::{ImageRef, RegistryRef};
use crate::registry::{Referrers, RegistryError};
use crate::store::Stores;
use crate::stream::{self, Origin};

const STEP: &str = "import";
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
    pub tool: String,
}

pub fn run(
    options: ImportOptions,
    common: &CommonArgs,
    references: Vec<String>,
    stdin: impl BufRead + Send + 'static,
    stdout: &mut impl Write,
) -> Result<u8, RunError> {
    let options = Arc::new(options);
    stream::run_tool(common, references, stdin, stdout, "os-import", STEP, |stores| {
        move |origin, work| {
            let (stores, options) = (stores.clone(), options.clone());
            async move {
                let record = crate::capture::record_for(&stores, &options.tool, origin, work).await;
                if record.is_error() {
                    return record;
                }
                import_record(&stores, &options, origin, record).await
            }
        }
    })
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
    BadTarget(#[from] crate::reference::ReferenceError),
}

impl ImportError {
    fn code(&self) -> &'static str {
        match self {
            ImportError::Registry(error) => error.code(),
            ImportError::Layout(error) => error.code(),
            ImportError::Blob { .. } | ImportError::Manifest { .. } => "digest-mismatch",
            ImportError::Missing { .. } => "incomplete-import",
            ImportError::BadTarget(_) => "bad-reference",
        }
    }
}

#[derive(Default)]
struct Stats {
    bytes: u64,
    copied: u64,
    mounted: u64,
    skipped: u64,
    manifests: u64,
}

/// A place manifests and blobs live.
#[derive(Clone)]
enum Place {
    Registry(RegistryRef),
    Layout(Arc<Layout>),
}

impl Place {
    async fn manifest(&self, stores: &Stores, digest: &Digest) -> Result<Vec<u8>, ImportError> {
        match self {
            Place::Registry(r) => Ok(stores
                .registry()
                .fetch_manifest(r, Some(digest))
                .await?
                .0
                .to_vec()),
            Place::Layout(layout) => {
                let (layout, digest) = (layout.clone(), digest.clone());
                Ok(off_thread(move || layout.read_blob(&digest)).await?)
            }
        }
    }

    async fn tagged(&self, stores: &Stores, tag: &str) -> Result<Option<Vec<u8>>, ImportError> {
        match self {
            Place::Registry(r) => Ok(stores
                .registry()
                .fetch_manifest_if_any(&r.with_tag(tag))
                .await?
                .map(|(bytes, _)| bytes.to_vec())),
            Place::Layout(layout) => {
                let (layout, tag) = (layout.clone(), tag.to_string());
                Ok(off_thread(move || layout.tagged_manifest(&tag)).await?)
            }
        }
    }

    async fn has_manifest(&self, stores: &Stores, digest: &Digest) -> Result<bool, ImportError> {
        match self {
            Place::Registry(r) => {
                let path = format!("/v2/{}/manifests/{digest}", r.repository);
                let response = stores
                    .registry()
                    .send(
                        r,
                        "pull",
                        reqwest::Method::HEAD,
                        &path,
                        Some(manifest::ACCEPT_ALL),
                    )
                    .await?;
                Ok(response.status().is_success())
            }
            Place::Layout(layout) => Ok(layout.has_blob(digest)),
        }
    }

    async fn has_blob(&self, stores: &Stores, digest: &Digest) -> Result<bool, ImportError> {
        match self {
            Place::Registry(r) => Ok(stores.registry().blob_exists(r, digest).await?),
            Place::Layout(layout) => Ok(layout.has_blob(digest)),
        }
    }

    /// Writes manifest bytes (by digest, and under `tag` when given).
    async fn put_manifest(
        &self,
        stores: &Stores,
        bytes: &[u8],
        media_type: &str,
        tag: Option<&str>,
    ) -> Result<(), ImportError> {
        match self {
            Place::Registry(r) => {
                stores
                    .registry()
                    .push_manifest(r, tag, media_type, Bytes::copy_from_slice(bytes))
                    .await?;
                Ok(())
            }
            Place::Layout(layout) => {
                let (layout, bytes, media_type, tag) = (
                    layout.clone(),
                    bytes.to_vec(),
                    media_type.to_string(),
                    tag.map(str::to_string),
                );
                off_thread(move || {
                    let digest = Digest::of(&bytes);
                    layout.write_blob(&digest, bytes.as_slice())?;
                    if tag.is_some() {
                        layout.add_manifest(&media_type, &digest, bytes.len() as u64, tag.as_deref())?;
                    }
                    Ok(())
                })
                .await?;
                Ok(())
            }
        }
    }
}

/// Passes a blob's chunks through while hashing them, and ends the stream
/// with an error if the bytes do not match `expected`, so the upload fails
/// instead of committing.
fn verified(
    stream: impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    expected: Digest,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let hasher = Arc::new(Mutex::new(Some(Hasher::default())));
    let feeding = hasher.clone();
    let body = stream.map(move |chunk| {
        if let (Ok(bytes), Some(hasher)) = (&chunk, feeding.lock().expect("hasher").as_mut()) {
            hasher.update(bytes);
        }
        chunk
    });
    let check = futures::stream::once(async move {
        let actual = hasher.lock().expect("hasher").take().map(Hasher::finish);
        match actual {
            Some(actual) if actual != expected => Some(Err(std::io::Error::other(format!(
                "content hashes to {actual}, not {expected}"
            )))),
            _ => None,
        }
    })
    .filter_map(futures::future::ready);
    body.chain(check)
}

/// Transfers of one blob before giving up on transient faults (a
/// connection reset mid-body restarts the whole transfer; the registry
/// discards the unfinished upload).
const BLOB_ATTEMPTS: u32 = 3;

async fn copy_blob(
    stores: &Stores,
    from: &Place,
    to: &Place,
    digest: &Digest,
    size: u64,
    stats: &mut Stats,
) -> Result<(), ImportError> {
    if to.has_blob(stores, digest).await? {
        stats.skipped += 1;
        return Ok(());
    }
    let mut attempt = 1;
    loop {
        match transfer_blob(stores, from, to, digest, size, stats).await {
            Err(ImportError::Registry(
                error @ (RegistryError::Unreachable { .. }
                | RegistryError::Status {
                    status: 429 | 500.., ..
                }),
            )) if attempt < BLOB_ATTEMPTS => {
                tracing::info!("blob {digest}: {error}; transfer {attempt} failed, starting over");
                tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

async fn transfer_blob(
    stores: &Stores,
    from: &Place,
    to: &Place,
    digest: &Digest,
    size: u64,
    stats: &mut Stats,
) -> Result<(), ImportError> {
    let blob_error = |detail: String| ImportError::Blob {
        digest: digest.clone(),
        detail,
    };
    match (from, to) {
        (Place::Registry(source), Place::Registry(target)) => {
            if source.registry == target.registry
                && source.repository != target.repository
                && stores.registry().mount_blob(target, source, digest).await?
            {
                stats.mounted += 1;
                return Ok(());
            }
            let stream = stores.registry().blob_stream(source, digest).await?;
            stores
                .registry()
                .upload_blob_stream(target, digest, size, verified(stream, digest.clone()))
                .await?;
        }
        (Place::Layout(source), Place::Registry(target)) => {
            let file = tokio::fs::File::open(source.blob_path(digest))
                .await
                .map_err(|e| blob_error(format!("{}: {e}", source.blob_path(digest).display())))?;
            let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
            stores
                .registry()
                .upload_blob_stream(target, digest, size, verified(stream, digest.clone()))
                .await?;
        }
        (Place::Registry(source), Place::Layout(target)) => {
            let stream = stores.registry().blob_stream(source, digest).await?;
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
        }
    }
    stats.copied += 1;
    stats.bytes += size;
    Ok(())
}

/// The child manifests of an index (none for an image manifest).
fn index_children(bytes: &[u8], media_type: &str) -> Vec<Digest> {
    if !manifest::is_index(media_type) {
        return Vec::new();
    }
    manifest::index_entries(bytes)
        .unwrap_or_default()
        .iter()
        .filter_map(|child| child.get("digest")?.as_str()?.parse().ok())
        .collect()
}

/// Copies the manifest `digest` and everything it references, children
/// first; returns its bytes and media type. Does nothing but read when the
/// target already has it.
async fn copy_tree(
    stores: &Stores,
    from: &Place,
    to: &Place,
    digest: &Digest,
    stats: &mut Stats,
) -> Result<(Vec<u8>, String), ImportError> {
    let bytes = from.manifest(stores, digest).await?;
    let summary = manifest::summarize(&bytes, None).map_err(|e| ImportError::Manifest {
        digest: digest.clone(),
        detail: e.to_string(),
    })?;
    let media_type = summary.media_type;
    if to.has_manifest(stores, digest).await? {
        return Ok((bytes, media_type));
    }
    let parsed: Value = serde_json::from_slice(&bytes).map_err(|e| ImportError::Manifest {
        digest: digest.clone(),
        detail: e.to_string(),
    })?;
    let descriptor = |value: &Value| -> Option<(Digest, u64)> {
        Some((
            value.get("digest")?.as_str()?.parse().ok()?,
            value.get("size")?.as_u64()?,
        ))
    };
    if manifest::is_index(&media_type) {
        for child in index_children(&bytes, &media_type) {
            Box::pin(copy_tree(stores, from, to, &child, stats)).await?;
        }
    } else {
        let config = parsed.get("config").into_iter();
        let layers = parsed["layers"].as_array().into_iter().flatten();
        for blob in config.chain(layers) {
            if let Some((blob_digest, size)) = descriptor(blob) {
                copy_blob(stores, from, to, &blob_digest, size, stats).await?;
            }
        }
    }
    to.put_manifest(stores, &bytes, &media_type, None).await?;
    stats.manifests += 1;
    Ok((bytes, media_type))
}

fn place_of(image: &ImageRef) -> Result<Place, ImportError> {
    match image {
        ImageRef::Registry(r) => Ok(Place::Registry(r.with(None))),
        ImageRef::Layout(l) => Ok(Place::Layout(Arc::new(Layout::open(&l.dir)?))),
    }
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

async fn import_record(
    stores: &Stores,
    options: &ImportOptions,
    origin: Origin,
    mut record: Record,
) -> Record {
    let fail = |mut record: Record, code: &str, message: String| {
        record.fail(STEP, code, format!("{origin}: {message}"));
        record
    };
    let Some(image) = record.image().map(str::to_string) else {
        return fail(record, "missing-field", "record has no \"image\"".into());
    };
    let digest = match record.digest() {
        Ok(Some(digest)) => digest,
        _ => {
            return fail(
                record,
                "missing-field",
                "record has no \"digest\": run os-digest first".into(),
            );
        }
    };
    let source: ImageRef = match image.parse() {
        Ok(source) => source,
        Err(error) => return fail(record, "bad-reference", format!("field \"image\": {error}")),
    };
    let target = match target_of(&options.destination, &source, record.get_str(field::SERVICE)) {
        Ok(target) => target,
        Err(error) => return fail(record, "bad-reference", error.to_string()),
    };
    if let Destination::Layout(dir) = &options.destination
        && let Err(error) = Layout::create(dir)
    {
        return fail(record, error.code(), error.to_string());
    }
    let started = Instant::now();
    let mut stats = Stats::default();
    let mut tags: Vec<String> = record
        .get_str(field::TAG)
        .map(str::to_string)
        .into_iter()
        .collect();
    tags.extend(options.tags.iter().cloned());
    let outcome = async {
        let from = place_of(&source)?;
        let to = place_of(&target)?;
        let (bytes, media_type) = copy_tree(stores, &from, &to, &digest, &mut stats).await?;
        for tag in &tags {
            to.put_manifest(stores, &bytes, &media_type, Some(tag)).await?;
        }
        if matches!(to, Place::Layout(_)) && tags.is_empty() {
            // A layout lists only what index.json names: name it by digest.
            to.put_manifest(stores, &bytes, &media_type, Some(&digest.tag_form()))
                .await?;
        }
        let mut attached = Vec::new();
        let mut mechanism = Referrers::None;
        if options.attachments {
            (attached, mechanism) = copy_attachments(stores, &from, &to, &digest, &mut stats).await?;
            // Platform images of an index are signed and attested too
            // (cosign sign --recursive, per-platform SBOMs).
            for child in index_children(&bytes, &media_type) {
                let (child_attached, _) = copy_attachments(stores, &from, &to, &child, &mut stats).await?;
                attached.extend(child_attached);
            }
        }
        // Listed again: anything attached at the source must be at the target.
        for (what, attached_digest) in &attached {
            if !to.has_manifest(stores, attached_digest).await? {
                return Err(ImportError::Missing { what: what.clone() });
            }
        }
        let target_mechanism = match &to {
            Place::Registry(r) if stores.registry().has_referrers_api(r, &digest).await? => "referrers-api",
            Place::Registry(_) | Place::Layout(_) => "tag-fallback",
        };
        Ok::<_, ImportError>((attached, mechanism, target_mechanism))
    }
    .await;
    match outcome {
        Ok((attached, mechanism, target_mechanism)) => {
            record.set(field::IMAGE, target.location());
            debug_assert_eq!(
                record.digest().ok().flatten(),
                Some(digest.clone()),
                "the digest never changes"
            );
            record.push_event(
                Event::new(STEP, &options.tool)
                    .with("from", source.location())
                    .with("to", target.location())
                    .with("bytes", stats.bytes)
                    .with("blobsCopied", stats.copied)
                    .with("blobsMounted", stats.mounted)
                    .with("blobsSkipped", stats.skipped)
                    .with("manifests", stats.manifests)
                    .with(
                        "attached",
                        attached.into_iter().map(|(what, _)| what).collect::<Vec<_>>(),
                    )
                    .with("targetReferrers", target_mechanism)
                    .with(
                        "sourceReferrers",
                        match mechanism {
                            Referrers::Api => "referrers-api",
                            Referrers::TagFallback => "tag-fallback",
                            Referrers::None => "none",
                        },
                    )
                    .with("durationMs", started.elapsed().as_millis() as u64),
            );
            record
        }
        Err(error) => fail(
            record,
            error.code(),
            format!("importing {source}@{digest} to {target}: {error}"),
        ),
    }
}

/// Copies cosign's attachment tags and OCI 1.1 referrers of `digest`;
/// returns what was attached (name and manifest digest) and how the source
/// offered referrers.
async fn copy_attachments(
    stores: &Stores,
    from: &Place,
    to: &Place,
    digest: &Digest,
    stats: &mut Stats,
) -> Result<(Vec<(String, Digest)>, Referrers), ImportError> {
    let mut attached = Vec::new();
    for suffix in ATTACHMENT_SUFFIXES {
        let tag = format!("{}{suffix}", digest.tag_form());
        if let Some(bytes) = from.tagged(stores, &tag).await? {
            let attachment = Digest::of(&bytes);
            let (bytes, media_type) = copy_tree(stores, from, to, &attachment, stats).await?;
            to.put_manifest(stores, &bytes, &media_type, Some(&tag)).await?;
            attached.push((tag, attachment));
        }
    }
    let (entries, mechanism) = match from {
        Place::Registry(r) => stores.registry().referrers(r, digest).await?,
        Place::Layout(_) => match from.tagged(stores, &digest.tag_form()).await? {
            Some(index) => (
                manifest::index_entries(&index).unwrap_or_default(),
                Referrers::TagFallback,
            ),
            None => (Vec::new(), Referrers::None),
        },
    };
    for entry in &entries {
        let Some(referrer) = entry
            .get("digest")
            .and_then(Value::as_str)
            .and_then(|d| d.parse::<Digest>().ok())
        else {
            continue;
        };
        copy_tree(stores, from, to, &referrer, stats).await?;
        attached.push((format!("referrer {referrer}"), referrer));
    }
    // Registries without the Referrers API (and layouts) find referrers
    // through the tag-fallback index: carry it, after its members.
    if !entries.is_empty()
        && let Some(index) = from.tagged(stores, &digest.tag_form()).await?
    {
        to.put_manifest(stores, &index, manifest::OCI_INDEX, Some(&digest.tag_form()))
            .await?;
    }
    Ok((attached, mechanism))
}
