//! Each host's command syntax: Azure Pipelines' `##vso[…]` logging
//! commands and GitHub Actions' workflow commands and `GITHUB_OUTPUT`
//! file, with each host's escaping.

use std::io::{self, Write};

/// The message part of an Azure logging command (after `]`).
pub fn azure_data(text: &str) -> String {
    text.replace('%', "%AZP25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A property value of an Azure logging command (inside `[…]`).
pub fn azure_property(text: &str) -> String {
    azure_data(text).replace(';', "%3B").replace(']', "%5D")
}

/// The message part of a GitHub workflow command (after `::`).
pub fn github_data(text: &str) -> String {
    text.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

/// A property value of a GitHub workflow command.
pub fn github_property(text: &str) -> String {
    github_data(text).replace(':', "%3A").replace(',', "%2C")
}

/// One `$GITHUB_OUTPUT` entry: `name=value`, or the heredoc form with a
/// delimiter the value does not contain when it spans lines.
pub fn github_output_entry(name: &str, value: &str) -> String {
    if !value.contains(['\n', '\r']) {
        return format!("{name}={value}\n");
    }
    let mut delimiter = format!("ONESTREAM_EOF_{}", std::process::id());
    while value.contains(&delimiter) {
        delimiter.push('_');
    }
    format!("{name}<<{delimiter}\n{value}\n{delimiter}\n")
}

pub(super) fn append(path: &std::path::Path, text: &str) -> io::Result<()> {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(text.as_bytes())
}
