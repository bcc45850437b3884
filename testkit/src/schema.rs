//! Validates tool output against the published record schema
//! (`docs/record.schema.json`): every record a test reads goes through here.

use std::sync::OnceLock;

use serde_json::Value;

fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let path = crate::bins::workspace_root().join("docs/record.schema.json");
        let schema: Value = serde_json::from_slice(&std::fs::read(&path).expect("read the record schema"))
            .expect("the record schema is JSON");
        jsonschema::validator_for(&schema).expect("the record schema is a valid JSON Schema")
    })
}

/// Parses NDJSON output, checking that it is nothing but schema-valid
/// records, one per line.
pub fn records(stdout: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(stdout).expect("stdout is UTF-8");
    text.lines()
        .map(|line| {
            let record: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            let errors: Vec<String> = validator()
                .iter_errors(&record)
                .map(|e| format!("{e} at {}", e.instance_path()))
                .collect();
            assert!(
                errors.is_empty(),
                "record violates docs/record.schema.json: {errors:?}\n{line}"
            );
            record
        })
        .collect()
}

/// The one record a command wrote (schema-checked).
pub fn one(assert: &assert_cmd::assert::Assert) -> Value {
    let mut out = records(&assert.get_output().stdout);
    assert_eq!(out.len(), 1, "expected one record: {out:?}");
    out.remove(0)
}

/// A command's stdout as text (records to feed the next tool).
pub fn stdout(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8(assert.get_output().stdout.clone()).expect("stdout is UTF-8")
}
