//! `os-digest`'s step: capture the immutable digest of each image, with what
//! the record needs about it (media type, size, platforms, service, source),
//! and check records that already carry a digest against their store (a
//! tag may have moved since).

use serde_json::{Map, Value};

use crate::oci::reference::ImageRef;
use crate::oci::registry::Resolved;
use crate::oci::store::Stores;
use crate::pipeline::{Step, Work};
use crate::record::Origin;
use crate::record::{ErrorCode, Event, Record, field};

const STEP: &str = "digest";

/// The binary whose step this is.
pub const TOOL: &str = "os-digest";

#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// `service` for records that have none.
    pub service: Option<String>,
    /// Derive `service` from the repository's last path segment.
    pub service_from_repo: bool,
    /// `source` for records that have none.
    pub source: Option<Map<String, Value>>,
    /// The tool the `digest` event names: os-digest, or the tool that
    /// resolved a bare reference on its way in ([`record_for`]).
    pub tool: &'static str,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            service: None,
            service_from_repo: false,
            source: None,
            tool: TOOL,
        }
    }
}

/// os-digest's step: references resolved, records checked.
pub struct Capture(pub CaptureOptions);

impl Step for Capture {
    const TOOL: &'static str = TOOL;
    const NAME: &'static str = STEP;

    async fn work(&self, stores: &Stores, origin: Origin, work: Work) -> Record {
        capture(stores, &self.0, origin, work).await
    }
}

/// The record a later step works on: a record as it came, or a bare
/// reference resolved first, as os-digest would (with a `digest` event
/// from `tool`). Either may come back as an error record.
pub async fn record_for(stores: &Stores, tool: &'static str, origin: Origin, work: Work) -> Record {
    match work {
        Work::Record(record) => record,
        Work::Reference(_) => {
            let options = CaptureOptions {
                tool,
                ..CaptureOptions::default()
            };
            capture(stores, &options, origin, work).await
        }
    }
}

/// Captures one input; never fails as a whole: problems become error
/// records.
pub async fn capture(stores: &Stores, options: &CaptureOptions, origin: Origin, work: Work) -> Record {
    match work {
        Work::Reference(text) => from_reference(stores, options, origin, &text).await,
        Work::Record(record) => check_record(stores, options, origin, record).await,
    }
}

async fn from_reference(stores: &Stores, options: &CaptureOptions, origin: Origin, text: &str) -> Record {
    let mut record = Record::new();
    let reference: ImageRef = match text.parse() {
        Ok(reference) => reference,
        Err(error) => {
            record.set(field::REFERENCE, text);
            record.fail(STEP, ErrorCode::BadReference, format!("{origin}: {error}"));
            return record;
        }
    };
    if let Some(service) = service_for(options, &reference) {
        record.set(field::SERVICE, service);
    }
    record.set(field::IMAGE, reference.location());
    match stores.resolve(&reference).await {
        Ok(resolved) => {
            record.set(field::DIGEST, resolved.digest.to_string());
            if let Some(tag) = reference.tag() {
                record.set(field::TAG, tag);
            }
            describe(&mut record, &resolved);
            if let Some(source) = &options.source {
                record.set(field::SOURCE, Value::Object(source.clone()));
            }
            record.push_event(event(options, &reference));
        }
        Err(error) => {
            if let Some(tag) = reference.tag() {
                record.set(field::TAG, tag);
            }
            record.set(field::REFERENCE, text);
            record.fail(STEP, (&error).into(), format!("{origin}: {error}"));
        }
    }
    record
}

async fn check_record(
    stores: &Stores,
    options: &CaptureOptions,
    origin: Origin,
    mut record: Record,
) -> Record {
    let Some(image) = record.image().map(str::to_string) else {
        record.fail(
            STEP,
            ErrorCode::MissingField,
            format!("{origin}: record has no \"image\" to resolve"),
        );
        return record;
    };
    let location: ImageRef = match image.parse() {
        Ok(location) => location,
        Err(error) => {
            record.fail(
                STEP,
                ErrorCode::BadReference,
                format!("{origin}: field \"image\": {error}"),
            );
            return record;
        }
    };
    if location.tag().is_some() || location.digest().is_some() {
        record.fail(
            STEP,
            ErrorCode::BadReference,
            format!("{origin}: field \"image\" must name a repository without tag or digest: {image:?}"),
        );
        return record;
    }
    let claimed = record.digest().expect("checked when the record was read");
    let tag = record.get_str(field::TAG).map(str::to_string);
    if tag.is_none() && claimed.is_none() {
        record.fail(
            STEP,
            ErrorCode::MissingField,
            format!("{origin}: record has neither \"tag\" nor \"digest\""),
        );
        return record;
    }
    // By tag when there is one: that is what may have moved.
    let reference = match &tag {
        Some(tag) => location.with(Some(tag.clone()), None),
        None => location.with(None, claimed.clone()),
    };
    let resolved = match stores.resolve(&reference).await {
        Ok(resolved) => resolved,
        Err(error) => {
            record.fail(STEP, (&error).into(), format!("{origin}: {error}"));
            return record;
        }
    };
    if let Some(claimed) = &claimed
        && *claimed != resolved.digest
    {
        record.fail(
            STEP,
            ErrorCode::DigestMismatch,
            format!(
                "{origin}: {reference} now resolves to {}, but the record says {claimed}: the tag moved",
                resolved.digest
            ),
        );
        return record;
    }
    record.set(field::DIGEST, resolved.digest.to_string());
    describe(&mut record, &resolved);
    if record.get_str(field::SERVICE).is_none()
        && let Some(service) = service_for(options, &location)
    {
        record.set(field::SERVICE, service);
    }
    if !record.fields().contains_key(field::SOURCE)
        && let Some(source) = &options.source
    {
        record.set(field::SOURCE, Value::Object(source.clone()));
    }
    record.push_event(event(options, &reference));
    record
}

fn service_for(options: &CaptureOptions, reference: &ImageRef) -> Option<String> {
    options.service.clone().or_else(|| {
        options
            .service_from_repo
            .then(|| reference.last_segment().to_string())
    })
}

fn describe(record: &mut Record, resolved: &Resolved) {
    record.set(field::MEDIA_TYPE, resolved.media_type.clone());
    record.set(field::SIZE, resolved.size);
    if !resolved.platforms.is_empty() {
        record.set(field::PLATFORMS, resolved.platforms.clone());
    }
}

fn event(options: &CaptureOptions, reference: &ImageRef) -> Event {
    let mut event = Event::new(STEP, options.tool).with("image", reference.location());
    if let Some(tag) = reference.tag() {
        event = event.with("tag", tag);
    }
    event
}
