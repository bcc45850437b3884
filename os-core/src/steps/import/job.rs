//! One record's import: the job its fields ask for, the image copied
//! under its names, its attachments carried and listed again at the target,
//! and the import event.

use std::time::Instant;

use indicatif::ProgressBar;

use super::acr::{Route, ServerImport};
use super::tree::index_children;
use super::{
    Attachments, Copied, Copier, Destination, ImportError, ImportOptions, Importer, STEP, Stats, TOOL, total,
};
use crate::oci::digest::Digest;
use crate::oci::layout::Layout;
use crate::oci::manifest;
use crate::oci::reference::ImageRef;
use crate::oci::registry::Referrers;
use crate::oci::store::{Place, Stores};
use crate::record::Origin;
use crate::record::{ErrorCode, Event, Record, field};

/// One record's import, as its fields and the options ask for it.
pub(super) struct Job {
    source: ImageRef,
    target: ImageRef,
    digest: Digest,
    /// The record's tag, then every `--tag`.
    tags: Vec<String>,
}

/// What one record's copy did, for its event.
pub(super) struct Imported {
    stats: Stats,
    copied: Copied,
    attachments: Attachments,
    target_mechanism: Referrers,
    way: Way,
}

/// Which way the image went.
pub(super) enum Way {
    /// Copied by this process; under `--via auto`, why not server-side.
    Copied {
        reason: Option<String>,
    },
    Server(ServerImport),
}

impl Job {
    /// The job a record asks for, or the record failed with why not.
    pub(super) fn of(
        record: Record,
        origin: Origin,
        options: &ImportOptions,
    ) -> Result<(Job, Record), Record> {
        let fail = |mut record: Record, code: ErrorCode, message: String| {
            record.fail(STEP, code, format!("{origin}: {message}"));
            record
        };
        let Some(image) = record.image().map(str::to_string) else {
            return Err(fail(
                record,
                ErrorCode::MissingField,
                "record has no \"image\"".into(),
            ));
        };
        let Ok(Some(digest)) = record.digest() else {
            return Err(fail(
                record,
                ErrorCode::MissingField,
                "record has no \"digest\": run os-digest first".into(),
            ));
        };
        let source: ImageRef = match image.parse() {
            Ok(source) => source,
            Err(error) => {
                return Err(fail(
                    record,
                    ErrorCode::BadReference,
                    format!("field \"image\": {error}"),
                ));
            }
        };
        let target = match target_of(&options.destination, &source, record.get_str(field::SERVICE)) {
            Ok(target) => target,
            Err(error) => return Err(fail(record, ErrorCode::BadReference, error.to_string())),
        };
        if let Destination::Layout(dir) = &options.destination
            && let Err(error) = Layout::create(dir)
        {
            return Err(fail(record, (&error).into(), error.to_string()));
        }
        let mut tags: Vec<String> = record
            .get_str(field::TAG)
            .map(str::to_string)
            .into_iter()
            .collect();
        tags.extend(options.tags.iter().cloned());
        let job = Job {
            source,
            target,
            digest,
            tags,
        };
        Ok((job, record))
    }

    /// The names the copy of `digest` gets at the target: the tags, or in a
    /// layout without tags its digest (a layout lists only what index.json
    /// names).
    pub(super) fn names_for(&self, to: &Place, digest: &Digest) -> Vec<String> {
        let mut names = self.tags.clone();
        if matches!(to, Place::Layout(_)) && names.is_empty() {
            names.push(digest.tag_form());
        }
        names
    }
}

impl Importer {
    pub(super) async fn import_record(&self, stores: &Stores, origin: Origin, record: Record) -> Record {
        let (job, mut record) = match Job::of(record, origin, &self.options) {
            Ok(found) => found,
            Err(failed) => return failed,
        };
        let started = Instant::now();
        // sha256: and 12 hex digits, as docker shows image IDs.
        let label = format!("{}@{}", job.source.last_segment(), &job.digest.to_string()[..19]);
        let progress = self.progress.bytes(&label);
        let known_type = record.get_str(field::MEDIA_TYPE).map(str::to_string);
        let imported = match self
            .copy(stores, &job, known_type.as_deref(), progress.clone())
            .await
        {
            Ok(imported) => imported,
            Err(error) => {
                progress.abandon_with_message("failed");
                let (source, digest, target) = (&job.source, &job.digest, &job.target);
                record.fail(
                    STEP,
                    error.code(),
                    format!("{origin}: importing {source}@{digest} to {target}: {error}"),
                );
                return record;
            }
        };
        let stats = &imported.stats;
        progress.finish_with_message(format!(
            "-> {}: {} blobs copied, {} mounted, {} skipped",
            job.target.location(),
            total(&stats.copied),
            total(&stats.mounted),
            total(&stats.skipped)
        ));
        record_import(&mut record, &job, imported, started);
        record
    }

    /// The copy itself: the image under its names, what is attached to it
    /// and to its platform images, then the check that all of it is there.
    pub(super) async fn copy(
        &self,
        stores: &Stores,
        job: &Job,
        known_type: Option<&str>,
        progress: ProgressBar,
    ) -> Result<Imported, ImportError> {
        let copier = Copier {
            stores,
            from: Place::of(&job.source)?,
            to: Place::of(&job.target)?,
            stats: Stats::default(),
            progress,
            transfers: &self.transfers,
            landed: &self.landed,
            source_tags: &self.source_tags,
        };
        let platforms = !self.options.platforms.is_empty();
        let (mut copied, way) = match self.server_side.route(&copier, platforms).await? {
            Route::Copy { reason } => (self.copy_image(&copier, job).await?, Way::Copied { reason }),
            Route::Server { target, source } => {
                let ends = (&target, source.as_ref());
                let image = (&job.digest, job.tags.as_slice());
                match self.server_side.import(&copier, image, ends, known_type).await? {
                    Ok((copied, server)) => (copied, Way::Server(server)),
                    Err(reason) => (
                        self.copy_image(&copier, job).await?,
                        Way::Copied { reason: Some(reason) },
                    ),
                }
            }
        };
        let attachments = if self.options.attachments {
            self.carry_attachments(&copier, job, &mut copied, known_type)
                .await?
        } else {
            Attachments::default()
        };
        listed_again(&copier, &attachments).await?;
        let target_mechanism = if copier.target_has_referrers_api(&copied.digest).await? {
            Referrers::Api
        } else {
            Referrers::TagFallback
        };
        Ok(Imported {
            stats: copier.stats,
            copied,
            attachments,
            target_mechanism,
            way,
        })
    }

    /// The image's tree (or, with `--platform`, a narrowed index), then
    /// every name it gets at the target.
    pub(super) async fn copy_image(&self, copier: &Copier<'_>, job: &Job) -> Result<Copied, ImportError> {
        let (stores, to, digest) = (copier.stores, &copier.to, &job.digest);
        let mut names = job.names_for(to, digest);
        // How many of `names` (from the first) name the digest already.
        let mut named = 0;
        let mut copied = if self.options.platforms.is_empty() {
            let first = names.first().map(String::as_str);
            // A tag already naming the digest vouches for the whole tree
            // (a tag is only ever set after what it names): a re-run
            // costs one HEAD. Otherwise the tree is copied and pushed
            // under the first name, one PUT that stores and tags it.
            let (manifest, first_named) = match first {
                Some(name) if to.tag_points_to(stores, name, digest).await? => (None, true),
                _ if to.has_manifest(stores, digest).await? => (None, false),
                _ => (
                    Some(copier.copy_tree_as(digest, None, first).await?),
                    first.is_some(),
                ),
            };
            named = usize::from(first_named);
            Copied {
                manifest,
                digest: digest.clone(),
            }
        } else {
            let copied = copier.copy_platforms(digest, &self.options.platforms).await?;
            names = job.names_for(to, &copied.digest);
            copied
        };
        for name in names.iter().skip(named) {
            if !to.tag_points_to(stores, name, &copied.digest).await? {
                let (bytes, media_type) = copier.manifest_of(&mut copied).await?;
                to.put_manifest(stores, &bytes, &media_type, Some(name)).await?;
            }
        }
        Ok(copied)
    }

    /// What is attached to the image, and to each platform image of an
    /// index (cosign sign --recursive, per-platform SBOMs).
    pub(super) async fn carry_attachments(
        &self,
        copier: &Copier<'_>,
        job: &Job,
        copied: &mut Copied,
        known_type: Option<&str>,
    ) -> Result<Attachments, ImportError> {
        let digest = &job.digest;
        let mut attachments = Attachments::default();
        if copied.digest == *digest {
            attachments = copier.copy_attachments(digest).await?;
        } else {
            tracing::warn!(
                "{}@{digest}: --platform made a new index {}; what is attached to {digest} \
                 (its signatures among it) does not apply to it and was left behind: sign it again",
                job.source,
                copied.digest
            );
        }
        // The record says whether it is an index; read the manifest only
        // when it does not.
        let known_type = match &copied.manifest {
            Some((_, media_type)) => Some(media_type.as_str()),
            None => known_type,
        };
        if known_type.is_none_or(manifest::is_index) {
            let (bytes, media_type) = copier.manifest_of(copied).await?;
            let children = index_children(&bytes, &media_type);
            let of_children =
                futures::future::try_join_all(children.iter().map(|child| copier.copy_attachments(child)))
                    .await?;
            for child_attachments in of_children {
                attachments.extend(child_attachments);
            }
        }
        Ok(attachments)
    }
}

pub(super) fn target_of(
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

/// Listed again: what this run attached must now be at the target.
pub(super) async fn listed_again(copier: &Copier<'_>, attachments: &Attachments) -> Result<(), ImportError> {
    let (stores, to) = (copier.stores, &copier.to);
    let checks = attachments.written.iter().map(|(what, attached)| async move {
        Ok::<_, ImportError>((what, to.has_manifest(stores, attached).await?))
    });
    for (what, there) in futures::future::try_join_all(checks).await? {
        if !there {
            return Err(ImportError::Missing { what: what.clone() });
        }
    }
    Ok(())
}

/// The record after its import: `image` at the target, the import event,
/// and with `--platform --allow-digest-change` the narrowed index's digest.
pub(super) fn record_import(record: &mut Record, job: &Job, imported: Imported, started: Instant) {
    let Imported {
        stats,
        copied,
        attachments,
        target_mechanism,
        way,
    } = imported;
    record.set(field::IMAGE, job.target.location());
    let mut event = Event::new(STEP, TOOL)
        .with("from", job.source.location())
        .with("to", job.target.location())
        .with("bytes", total(&stats.bytes))
        .with("bytesThroughAgent", total(&stats.bytes))
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
        .with("targetReferrers", target_mechanism.label())
        .with("sourceReferrers", attachments.mechanism.label())
        .with("durationMs", started.elapsed().as_millis() as u64);
    event = with_way(event, way);
    if let (false, Some((bytes, _))) = (copied.digest == job.digest, &copied.manifest) {
        // Asked for with --platform and --allow-digest-change: the record
        // now names the narrowed index, and the event says where it came from.
        let platforms = manifest::summarize(bytes, None)
            .map(|s| s.platforms)
            .unwrap_or_default();
        record.set(field::DIGEST, copied.digest.to_string());
        record.set(field::SIZE, bytes.len() as u64);
        record.set(field::PLATFORMS, platforms.clone());
        event = event
            .with("sourceDigest", job.digest.to_string())
            .with("platforms", platforms);
    }
    record.push_event(event);
}

/// The event's `via` and what goes with it: why `auto` copied, ARM's
/// operation, the tags `--force` moved.
fn with_way(event: Event, way: Way) -> Event {
    match way {
        Way::Copied { reason: None } => event.with("via", "copy"),
        Way::Copied { reason: Some(reason) } => event.with("via", "copy").with("viaReason", reason),
        Way::Server(ServerImport { operation, moved }) => {
            let mut event = event.with("via", "acr-import");
            event = match operation {
                Some(operation) => event.with("operationId", operation),
                None => event.with("operationId", serde_json::Value::Null),
            };
            if !moved.is_empty() {
                event = event.with("force", true).with("movedTags", moved);
            }
            event
        }
    }
}
