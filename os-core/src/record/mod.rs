//! The artifact record: one JSON object per line (NDJSON), the contract
//! between the tools (see `docs/record.md`).
//!
//! A [`Record`] keeps every field it was given, in order and with numbers
//! exactly as written (serde_json's `preserve_order` and
//! `arbitrary_precision`), so fields other teams add pass through unchanged.
//! Tools only add: they set their own fields and append one `history` event.

use std::io::Write;

use serde_json::{Map, Value};

use crate::oci::digest::Digest;

mod code;
mod input;
mod locate;

pub use code::ErrorCode;
pub use input::{Input, Line, Origin, read_lines};
pub use locate::located;

/// Field names of the record contract.
pub mod field {
    pub const SERVICE: &str = "service";
    pub const IMAGE: &str = "image";
    pub const DIGEST: &str = "digest";
    pub const TAG: &str = "tag";
    pub const MEDIA_TYPE: &str = "mediaType";
    pub const SIZE: &str = "size";
    pub const PLATFORMS: &str = "platforms";
    pub const SOURCE: &str = "source";
    pub const HISTORY: &str = "history";
    pub const ERROR: &str = "error";
    /// Set only on error records made from an input line that named an
    /// image but could not become a record (bad reference, unknown tag).
    pub const REFERENCE: &str = "reference";
}

#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    fields: Map<String, Value>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("field {field:?} must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("field \"digest\": {0}")]
    BadDigest(#[from] crate::oci::digest::DigestError),
    #[error("record has no {0:?} field")]
    Missing(&'static str),
}

impl Record {
    pub fn new() -> Record {
        Record { fields: Map::new() }
    }

    /// Checks the fields every tool relies on, so a record that would break
    /// a later step is refused at the line it arrived on.
    pub fn from_object(fields: Map<String, Value>) -> Result<Record, RecordError> {
        let record = Record { fields };
        for name in [field::IMAGE, field::TAG, field::SERVICE, field::MEDIA_TYPE] {
            if matches!(record.fields.get(name), Some(v) if !v.is_string()) {
                return Err(RecordError::WrongType {
                    field: name,
                    expected: "a string",
                });
            }
        }
        if matches!(record.fields.get(field::HISTORY), Some(v) if !v.is_array()) {
            return Err(RecordError::WrongType {
                field: field::HISTORY,
                expected: "an array of events",
            });
        }
        if matches!(record.fields.get(field::ERROR), Some(v) if !v.is_object()) {
            return Err(RecordError::WrongType {
                field: field::ERROR,
                expected: "an object",
            });
        }
        record.digest()?;
        Ok(record)
    }

    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.fields.get(name).and_then(Value::as_str)
    }

    pub fn set(&mut self, name: &str, value: impl Into<Value>) {
        self.fields.insert(name.to_string(), value.into());
    }

    pub fn digest(&self) -> Result<Option<Digest>, RecordError> {
        match self.fields.get(field::DIGEST) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.parse()?)),
            Some(_) => Err(RecordError::WrongType {
                field: field::DIGEST,
                expected: "a string like sha256:<64 hex>",
            }),
        }
    }

    pub fn image(&self) -> Option<&str> {
        self.get_str(field::IMAGE)
    }

    pub fn is_error(&self) -> bool {
        self.fields.contains_key(field::ERROR)
    }

    pub fn history(&self) -> &[Value] {
        self.fields
            .get(field::HISTORY)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Appends one event to `history` (never rewrites earlier events).
    pub fn push_event(&mut self, event: Event) {
        let history = self
            .fields
            .entry(field::HISTORY)
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(events) = history {
            events.push(Value::Object(event.fields));
        }
    }

    /// Turns this record into an error record: same fields, plus `error`.
    pub fn fail(&mut self, step: &str, code: ErrorCode, message: impl Into<String>) {
        let mut error = Map::new();
        error.insert("step".into(), step.into());
        error.insert("code".into(), code.as_str().into());
        error.insert("message".into(), message.into().into());
        self.fields.insert(field::ERROR.into(), Value::Object(error));
    }

    pub fn write_line(&self, out: &mut impl Write) -> std::io::Result<()> {
        serde_json::to_writer(&mut *out, &self.fields)?;
        out.write_all(b"\n")
    }
}

impl Default for Record {
    fn default() -> Self {
        Record::new()
    }
}

/// One `history` entry: `step`, `tool`, `at`, then the step's own fields.
#[derive(Clone, Debug)]
pub struct Event {
    fields: Map<String, Value>,
}

impl Event {
    /// `tool` is the binary's name (`os-digest`); the event names it with
    /// its version (`os-digest 0.1.0`), which every tool of the workspace
    /// shares with this library.
    pub fn new(step: &str, tool: &str) -> Event {
        let mut fields = Map::new();
        fields.insert("step".into(), step.into());
        fields.insert(
            "tool".into(),
            format!("{tool} {}", env!("CARGO_PKG_VERSION")).into(),
        );
        fields.insert("at".into(), now_rfc3339().into());
        Event { fields }
    }

    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Event {
        self.fields.insert(name.to_string(), value.into());
        self
    }
}

/// UTC, second precision: what the audit trail shows and sorts by.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_append_and_errors_keep_the_record() {
        let mut record = Record::new();
        record.set(field::IMAGE, "r.io/a");
        record.push_event(Event::new("digest", "os-digest").with("image", "r.io/a"));
        record.push_event(Event::new("sign", "os-sign"));
        assert_eq!(record.history().len(), 2);
        assert_eq!(record.history()[0]["step"], "digest");
        record.fail("sign", ErrorCode::RegistryError, "boom");
        assert!(record.is_error());
        assert_eq!(record.image(), Some("r.io/a"));
        assert_eq!(record.fields()["error"]["code"], "registry-error");
    }
}
