//! The artifact record: one JSON object per line (NDJSON), the contract
//! between the tools (see `docs/record.md`).
//!
//! A [`Record`] keeps every field it was given, in order and with numbers
//! exactly as written (serde_json's `preserve_order` and
//! `arbitrary_precision`), so fields other teams add pass through unchanged.
//! Tools only add: they set their own fields and append one `history` event.

use std::io::{BufRead, Write};

use serde_json::{Map, Value};

use crate::digest::Digest;

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
    BadDigest(#[from] crate::digest::DigestError),
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
    pub fn fail(&mut self, step: &str, code: &str, message: impl Into<String>) {
        let mut error = Map::new();
        error.insert("step".into(), step.into());
        error.insert("code".into(), code.into());
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
    /// `tool` is the binary name and version, e.g. `os-digest 0.1.0`.
    pub fn new(step: &str, tool: &str) -> Event {
        let mut fields = Map::new();
        fields.insert("step".into(), step.into());
        fields.insert("tool".into(), tool.into());
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

/// One line of input: a record, a bare image reference (for tools that
/// take them on stdin), or a line that is neither.
#[derive(Debug)]
pub enum Input {
    Record(Record),
    Reference(String),
    Malformed(String),
}

/// An input with the 1-based stdin line it came from, for messages.
#[derive(Debug)]
pub struct Line {
    pub number: usize,
    pub input: Input,
}

/// Reads NDJSON records (and, with `references`, bare references) line by
/// line. There is no line-length cap. Blank lines are skipped. A line that
/// cannot be read is reported as [`Input::Malformed`] and reading goes on,
/// so one bad line never hides the records after it.
pub fn read_lines(mut reader: impl BufRead, references: bool) -> impl Iterator<Item = std::io::Result<Line>> {
    let mut number = 0;
    let mut buffer = Vec::new();
    std::iter::from_fn(move || {
        loop {
            buffer.clear();
            match reader.read_until(b'\n', &mut buffer) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(error) => return Some(Err(error)),
            }
            number += 1;
            let text = match std::str::from_utf8(&buffer) {
                Ok(text) => text.trim(),
                Err(_) => {
                    return Some(Ok(Line {
                        number,
                        input: Input::Malformed("not UTF-8 text".into()),
                    }));
                }
            };
            if text.is_empty() {
                continue;
            }
            return Some(Ok(Line {
                number,
                input: parse_line(text, references),
            }));
        }
    })
}

fn parse_line(text: &str, references: bool) -> Input {
    if !text.starts_with(['{', '[', '"']) {
        if references && !text.contains(char::is_whitespace) {
            return Input::Reference(text.to_string());
        }
        let what = if references {
            "expected a JSON record or one image reference"
        } else {
            "expected a JSON record (one object per line)"
        };
        return Input::Malformed(what.to_string());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(fields)) => match Record::from_object(fields) {
            Ok(record) => Input::Record(record),
            Err(error) => Input::Malformed(error.to_string()),
        },
        Ok(_) => Input::Malformed("expected a JSON object".into()),
        Err(error) => Input::Malformed(format!(
            "malformed JSON at column {}: {}",
            error.column(),
            strip_position(&error.to_string())
        )),
    }
}

/// serde_json appends " at line L column C"; the line is always 1 here
/// (one record per line), so we say the column ourselves.
fn strip_position(message: &str) -> &str {
    message.split(" at line ").next().unwrap_or(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str, references: bool) -> Vec<Line> {
        read_lines(text.as_bytes(), references)
            .collect::<std::io::Result<_>>()
            .unwrap()
    }

    #[test]
    fn unknown_fields_order_and_numbers_survive() {
        let text = r#"{"zeta":1,"team":{"cost":12345678901234567890123,"ratio":1.50},"image":"r.io/a","alpha":[true,null]}"#;
        let read = lines(text, false);
        let [
            Line {
                input: Input::Record(record),
                ..
            },
        ] = read.as_slice()
        else {
            panic!("expected one record, got {read:?}");
        };
        let mut out = Vec::new();
        record.write_line(&mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), format!("{text}\n"));
    }

    #[test]
    fn bad_lines_are_reported_with_their_number_and_reading_goes_on() {
        let text = "{\"image\":\"r.io/a\"}\n\n{not json\n[1]\n{\"digest\":\"sha256:xyz\"}\nr.io/b:1\n{\"image\":\"r.io/c\"}\n";
        let read = lines(text, false);
        let summary: Vec<(usize, String)> = read
            .iter()
            .map(|l| {
                let kind = match &l.input {
                    Input::Record(_) => "record".to_string(),
                    Input::Reference(r) => format!("ref {r}"),
                    Input::Malformed(m) => format!("bad: {m}"),
                };
                (l.number, kind)
            })
            .collect();
        assert_eq!(summary[0], (1, "record".into()));
        assert_eq!(summary[1].0, 3);
        assert!(summary[1].1.contains("malformed JSON at column 2"), "{summary:?}");
        assert_eq!(summary[2], (4, "bad: expected a JSON object".into()));
        assert!(summary[3].1.contains("malformed digest"), "{summary:?}");
        assert_eq!(summary[4].0, 6);
        assert!(summary[4].1.starts_with("bad: expected a JSON record"));
        assert_eq!(summary[5], (7, "record".into()));
        let with_refs = lines(text, true);
        assert!(matches!(&with_refs[4].input, Input::Reference(r) if r == "r.io/b:1"));
    }

    #[test]
    fn events_append_and_errors_keep_the_record() {
        let mut record = Record::new();
        record.set(field::IMAGE, "r.io/a");
        record.push_event(Event::new("digest", "os-digest 0.1.0").with("image", "r.io/a"));
        record.push_event(Event::new("sign", "os-sign 0.1.0"));
        assert_eq!(record.history().len(), 2);
        assert_eq!(record.history()[0]["step"], "digest");
        record.fail("sign", "registry-error", "boom");
        assert!(record.is_error());
        assert_eq!(record.image(), Some("r.io/a"));
        assert_eq!(record.fields()["error"]["code"], "registry-error");
    }

    #[test]
    fn wrong_field_types_are_refused() {
        for text in [
            r#"{"image":5}"#,
            r#"{"history":{}}"#,
            r#"{"digest":7}"#,
            r#"{"error":"x"}"#,
        ] {
            let read = lines(text, false);
            assert!(matches!(read[0].input, Input::Malformed(_)), "{text}");
        }
    }
}
