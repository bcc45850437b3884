//! How input becomes records: NDJSON lines (and, for tools that take
//! them, bare image references) read one by one with no line-length cap, a
//! line that cannot be read reported with its number, and where each input
//! came from ([`Origin`]) for messages.

use std::fmt;
use std::io::BufRead;

use serde_json::Value;

use super::Record;

/// Where an input came from, for messages: `stdin line 3`, `argument 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Stdin(usize),
    Argument(usize),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Stdin(line) => write!(f, "stdin line {line}"),
            Origin::Argument(n) => write!(f, "argument {n}"),
        }
    }
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
