//! What a run tells its CI host: each record seen on stdout becomes a row,
//! and when the run is over the host gets its output variables, one
//! annotation per failure this tool found, and a run summary, with every
//! secret of the environment scrubbed out.

use std::fmt::Write as _;
use std::io::Write;

use serde_json::Value;

use super::Host;
use super::commands::{
    append, azure_data, azure_property, github_data, github_output_entry, github_property,
};
use crate::record::field;

/// At most this many rows in a summary: GitHub caps a step summary at 1 MiB.
pub(super) const SUMMARY_ROWS: usize = 500;

/// Secret-looking values shorter than this are not redacted: a flag such as
/// `USE_TOKEN=true` would otherwise turn every "true" into `***`, and a real
/// secret is longer.
pub(super) const SHORTEST_SECRET: usize = 8;

/// One artifact as the summary shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Row {
    service: String,
    image: String,
    digest: String,
    signer: String,
    imported: String,
    verification: String,
    deploy: String,
    /// `step`, `code`, `message` of an error record.
    error: Option<(String, String, String)>,
}

/// Collects what a tool wrote and, at the end, tells the host.
pub struct Reporter {
    host: Host,
    tool: String,
    step: String,
    rows: Vec<Row>,
    rows_left_out: usize,
    /// `image`, `digest`, `service` of the last successful record.
    last_success: Option<[String; 3]>,
    secrets: Vec<String>,
}

impl Reporter {
    /// `secrets`: values to redact from everything written (see
    /// [`secret_values`]).
    pub fn new(host: Host, tool: &str, step: &str, secrets: Vec<String>) -> Reporter {
        Reporter {
            host,
            tool: tool.to_string(),
            step: step.to_string(),
            rows: Vec::new(),
            rows_left_out: 0,
            last_success: None,
            secrets,
        }
    }

    /// One line of the tool's stdout: a record (anything else is ignored).
    pub fn observe_line(&mut self, line: &[u8]) {
        let Ok(Value::Object(record)) = serde_json::from_slice::<Value>(line) else {
            return;
        };
        let text = |name: &str| {
            record
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let history: &[Value] = record
            .get(field::HISTORY)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let events = |step: &'static str| {
            history
                .iter()
                .filter(move |event| event.get("step").and_then(Value::as_str) == Some(step))
        };
        let event_text =
            |event: &Value, name: &str| event.get(name).and_then(Value::as_str).map(str::to_string);

        let mut row = Row {
            service: text(field::SERVICE),
            image: text(field::IMAGE),
            digest: text(field::DIGEST),
            ..Row::default()
        };
        if let Some(sign) = events("sign").next_back() {
            row.signer = match (event_text(sign, "signer"), event_text(sign, "keyId")) {
                (Some(signer), Some(key)) => format!("{signer} (key {key})"),
                (signer, key) => signer.or(key).unwrap_or_default(),
            };
        }
        let mut hops: Vec<String> = Vec::new();
        for import in events("import") {
            if hops.is_empty()
                && let Some(from) = event_text(import, "from")
            {
                hops.push(from);
            }
            if let Some(to) = event_text(import, "to") {
                hops.push(to);
            }
        }
        row.imported = hops.join(" → ");
        if let Some(verify) = events("verify").next_back() {
            let verified = verify.get("verified").and_then(Value::as_bool) == Some(true);
            let at = event_text(verify, "image").unwrap_or_default();
            let key = event_text(verify, "keyId")
                .map(|k| format!(" (key {k})"))
                .unwrap_or_default();
            row.verification = if verified {
                format!("verified at {at}{key}")
            } else {
                format!("NOT verified at {at}{key}")
            };
        }
        if let Some(deploy) = events("deploy").next_back() {
            row.deploy = deploy_target(deploy);
        }
        if let Some(Value::Object(error)) = record.get(field::ERROR) {
            let part = |name: &str| {
                error
                    .get(name)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            row.error = Some((part("step"), part("code"), part("message")));
        } else if !row.image.is_empty() && !row.digest.is_empty() {
            self.last_success = Some([row.image.clone(), row.digest.clone(), row.service.clone()]);
        }
        if self.rows.len() < SUMMARY_ROWS {
            self.rows.push(row);
        } else {
            self.rows_left_out += 1;
        }
    }

    /// Tells the host: commands on `stderr`, files where the host wants
    /// them. A file that cannot be written is a warning on stderr, not a
    /// failure of the run: the records themselves went out fine.
    pub fn finish(self, stderr: &mut impl Write) {
        let mut commands = String::new();
        let mut problems = Vec::new();
        let outputs = self.last_success.as_ref().map(|[image, digest, service]| {
            [("image", image), ("digest", digest), ("service", service)]
                .into_iter()
                .filter(|(_, value)| !value.is_empty())
                .map(|(name, value)| (name, self.redact(value)))
                .collect::<Vec<_>>()
        });
        let errors: Vec<(String, String)> = self
            .own_errors()
            .map(|(code, message)| (self.redact(code), self.redact(message)))
            .collect();
        let summary = self.summary_markdown();
        match &self.host {
            Host::Azure { temp_dir } => {
                for (name, value) in outputs.iter().flatten() {
                    let _ = writeln!(
                        commands,
                        "##vso[task.setvariable variable={name};isOutput=true]{}",
                        azure_data(value)
                    );
                }
                for (code, message) in &errors {
                    let _ = writeln!(
                        commands,
                        "##vso[task.logissue type=error;code={}]{}: {}",
                        azure_property(code),
                        self.tool,
                        azure_data(message)
                    );
                }
                if let Some(dir) = temp_dir {
                    let path = dir.join(format!("onestream-{}-{}.md", self.tool, std::process::id()));
                    match std::fs::write(&path, &summary) {
                        Ok(()) => {
                            let _ = writeln!(
                                commands,
                                "##vso[task.uploadsummary]{}",
                                azure_data(&path.to_string_lossy())
                            );
                        }
                        Err(error) => {
                            problems.push(format!("writing the run summary {}: {error}", path.display()))
                        }
                    }
                }
            }
            Host::GitHub { output, step_summary } => {
                for (code, message) in &errors {
                    let _ = writeln!(
                        commands,
                        "::error title={}::{}",
                        github_property(&format!("{} {code}", self.tool)),
                        github_data(message)
                    );
                }
                if let (Some(path), Some(outputs)) = (output, &outputs) {
                    let mut text = String::new();
                    for (name, value) in outputs {
                        text.push_str(&github_output_entry(name, value));
                    }
                    if let Err(error) = append(path, &text) {
                        problems.push(format!("writing GITHUB_OUTPUT {}: {error}", path.display()));
                    }
                }
                if let Some(path) = step_summary
                    && let Err(error) = append(path, &summary)
                {
                    problems.push(format!("writing GITHUB_STEP_SUMMARY {}: {error}", path.display()));
                }
            }
        }
        for problem in problems {
            let _ = writeln!(commands, "{}: warning: {}", self.tool, self.redact(&problem));
        }
        let _ = stderr.write_all(commands.as_bytes());
        let _ = stderr.flush();
    }

    /// `code`, `message` of the records this tool failed (not those it
    /// received already failed: their tool annotated them).
    pub(super) fn own_errors(&self) -> impl Iterator<Item = (&str, &str)> {
        self.rows.iter().filter_map(|row| match &row.error {
            Some((step, code, message)) if *step == self.step => Some((code.as_str(), message.as_str())),
            _ => None,
        })
    }

    pub(super) fn summary_markdown(&self) -> String {
        let failed = self.rows.iter().filter(|row| row.error.is_some()).count();
        let total = self.rows.len() + self.rows_left_out;
        let mut text = format!(
            "### {}: {total} artifact{}{}\n\n",
            self.tool,
            if total == 1 { "" } else { "s" },
            if failed > 0 {
                format!(", {failed} failed")
            } else {
                String::new()
            }
        );
        if self.rows.is_empty() {
            text.push_str("No records.\n\n");
            return self.redact(&text);
        }
        text.push_str("| service | image | digest | signer | imported | verification | deploy |\n");
        text.push_str("|---|---|---|---|---|---|---|\n");
        for row in &self.rows {
            let verification = match &row.error {
                Some((step, code, message)) => format!("FAILED at {step} ({code}): {message}"),
                None if row.verification.is_empty() => "not verified".to_string(),
                None => row.verification.clone(),
            };
            let digest = if is_digest(&row.digest) {
                format!("`{}`", row.digest)
            } else {
                cell(&row.digest)
            };
            let _ = writeln!(
                text,
                "| {} | {} | {digest} | {} | {} | {} | {} |",
                cell(&row.service),
                cell(&row.image),
                cell(&row.signer),
                cell(&row.imported),
                cell(&verification),
                cell(&row.deploy),
            );
        }
        if self.rows_left_out > 0 {
            let _ = writeln!(text, "\n… and {} more.", self.rows_left_out);
        }
        text.push('\n');
        self.redact(&text)
    }

    pub(super) fn redact(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "***");
            }
        }
        text
    }
}

/// The values worth redacting: those of variables whose name says secret,
/// whole and line by line (a PEM key), longest first so a value that
/// contains another is replaced whole.
pub fn secret_values(vars: impl Iterator<Item = (String, String)>) -> Vec<String> {
    let mut values = Vec::new();
    for (name, value) in vars {
        let upper = name.to_ascii_uppercase();
        let secret = ["PASSWORD", "SECRET", "TOKEN", "PRIVATE_KEY", "PASSPHRASE"]
            .iter()
            .any(|marker| upper.contains(marker));
        if !secret {
            continue;
        }
        values.push(value.clone());
        values.extend(value.lines().map(|line| line.trim().to_string()));
    }
    values.retain(|value| value.len() >= SHORTEST_SECRET);
    values.sort_by_key(|value| std::cmp::Reverse(value.len()));
    values.dedup();
    values
}

/// Where a deploy event put the artifact: cluster context and namespace, or
/// a GitOps repository and path, whatever the event names.
pub(super) fn deploy_target(event: &Value) -> String {
    let text = |name: &str| event.get(name).and_then(Value::as_str).filter(|v| !v.is_empty());
    let place: Vec<&str> = ["context", "cluster", "namespace", "repository", "path"]
        .into_iter()
        .filter_map(text)
        .collect();
    let place = if place.is_empty() {
        "deployed".to_string()
    } else {
        place.join(" / ")
    };
    match text("result") {
        Some(result) => format!("{place} ({result})"),
        None => place,
    }
}

pub(super) fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A markdown table cell: one line, no column breaks, no HTML (GitHub
/// renders HTML in step summaries).
pub(super) fn cell(text: &str) -> String {
    if text.is_empty() {
        return "—".to_string();
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '|' => out.push_str("\\|"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::ci_host::commands::{
        azure_property, github_data, github_output_entry, github_property,
    };
    use crate::pipeline::ci_host::{Host, Observed};
    use crate::pipeline::source::env_of;

    const DIGEST: &str = "sha256:3c9f000000000000000000000000000000000000000000000000000000000001";

    fn promoted() -> String {
        serde_json::json!({
            "service": "iam",
            "image": "prod.example.com/onestream/iam",
            "digest": DIGEST,
            "history": [
                {"step": "digest", "image": "dev.example.com/onestream/iam"},
                {"step": "sign", "signer": "azurekms://kv.vault.azure.net/cosign", "keyId": "sha256:aa"},
                {"step": "import", "from": "dev.example.com/onestream/iam", "to": "staging.example.com/onestream/iam"},
                {"step": "import", "from": "staging.example.com/onestream/iam", "to": "prod.example.com/onestream/iam"},
                {"step": "verify", "image": "prod.example.com/onestream/iam", "keyId": "sha256:aa", "verified": true},
                {"step": "deploy", "context": "aks-prod", "namespace": "iam", "result": "rolled-out"}
            ]
        })
        .to_string()
    }

    fn failed(step: &str, message: &str) -> String {
        serde_json::json!({
            "service": "auth",
            "image": "dev.example.com/onestream/auth",
            "digest": DIGEST,
            "error": {"step": step, "code": "no-signature", "message": message}
        })
        .to_string()
    }

    fn finish(reporter: Reporter) -> String {
        let mut stderr = Vec::new();
        reporter.finish(&mut stderr);
        String::from_utf8(stderr).unwrap()
    }

    #[test]
    fn hosts_are_told_apart_and_azure_wins() {
        assert_eq!(Host::detect(&env_of(&[])), None);
        assert_eq!(Host::detect(&env_of(&[("TF_BUILD", "False")])), None);
        assert_eq!(
            Host::detect(&env_of(&[("TF_BUILD", "True"), ("GITHUB_ACTIONS", "true")])),
            Some(Host::Azure { temp_dir: None })
        );
        assert_eq!(
            Host::detect(&env_of(&[("GITHUB_ACTIONS", "true"), ("GITHUB_OUTPUT", "/o")])),
            Some(Host::GitHub {
                output: Some("/o".into()),
                step_summary: None
            })
        );
    }

    #[test]
    fn azure_gets_output_variables_of_the_last_success_and_only_its_own_errors() {
        let mut reporter = Reporter::new(Host::Azure { temp_dir: None }, "os-verify", "verify", vec![]);
        reporter.observe_line(promoted().as_bytes());
        reporter.observe_line(
            failed(
                "verify",
                "stdin line 2: 100% wrong;\n##vso[task.complete result=Succeeded]",
            )
            .as_bytes(),
        );
        reporter.observe_line(failed("sign", "upstream failure").as_bytes());
        let stderr = finish(reporter);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(
            lines,
            [
                "##vso[task.setvariable variable=image;isOutput=true]prod.example.com/onestream/iam",
                &format!("##vso[task.setvariable variable=digest;isOutput=true]{DIGEST}"),
                "##vso[task.setvariable variable=service;isOutput=true]iam",
                "##vso[task.logissue type=error;code=no-signature]os-verify: stdin line 2: 100%AZP25 wrong;%0A##vso[task.complete result=Succeeded]",
            ]
        );
    }

    #[test]
    fn escaping_follows_each_host() {
        assert_eq!(azure_property("a;b]c%\r\n"), "a%3Bb%5Dc%AZP25%0D%0A");
        assert_eq!(github_property("a:b,c%\r\n"), "a%3Ab%2Cc%25%0D%0A");
        assert_eq!(github_data("a:b,c"), "a:b,c");
        assert_eq!(github_output_entry("image", "r/a"), "image=r/a\n");
        // A value holding the first delimiter tried must not end its own entry.
        let value = format!("two\nONESTREAM_EOF_{}", std::process::id());
        let entry = github_output_entry("service", &value);
        let delimiter = entry.lines().next().unwrap().strip_prefix("service<<").unwrap();
        assert!(value.lines().all(|line| line != delimiter), "{entry}");
        assert_eq!(entry, format!("service<<{delimiter}\n{value}\n{delimiter}\n"));
    }

    #[test]
    fn summary_names_signer_imports_verification_and_deploy() {
        let mut reporter = Reporter::new(Host::Azure { temp_dir: None }, "os-deploy", "deploy", vec![]);
        reporter.observe_line(promoted().as_bytes());
        reporter.observe_line(failed("verify", "a <b>|c</b>").as_bytes());
        let summary = reporter.summary_markdown();
        assert!(
            summary.starts_with("### os-deploy: 2 artifacts, 1 failed\n"),
            "{summary}"
        );
        assert!(summary.contains(&format!(
            "| iam | prod.example.com/onestream/iam | `{DIGEST}` | azurekms://kv.vault.azure.net/cosign (key sha256:aa) \
             | dev.example.com/onestream/iam → staging.example.com/onestream/iam → prod.example.com/onestream/iam \
             | verified at prod.example.com/onestream/iam (key sha256:aa) | aks-prod / iam (rolled-out) |"
        )));
        assert!(
            summary.contains("FAILED at verify (no-signature): a &lt;b&gt;\\|c&lt;/b&gt; | — |"),
            "{summary}"
        );
    }

    #[test]
    fn secrets_from_the_environment_never_reach_the_host() {
        let secrets = secret_values(
            [
                ("COSIGN_PASSWORD".to_string(), "hunter2-pass".to_string()),
                ("PATH".to_string(), "/usr/bin".to_string()),
                ("USE_TOKEN".to_string(), "true".to_string()),
            ]
            .into_iter(),
        );
        assert_eq!(secrets, ["hunter2-pass"]);
        let mut reporter = Reporter::new(Host::Azure { temp_dir: None }, "os-sign", "sign", secrets);
        reporter.observe_line(failed("sign", "key hunter2-pass refused").as_bytes());
        let stderr = finish(reporter);
        assert!(stderr.contains("os-sign: key *** refused"), "{stderr}");
        assert!(!stderr.contains("hunter2"));
    }

    #[test]
    fn observed_stdout_is_unchanged_and_seen_line_by_line() {
        let mut reporter = Reporter::new(
            Host::GitHub {
                output: None,
                step_summary: None,
            },
            "os-digest",
            "digest",
            vec![],
        );
        let mut stdout = Vec::new();
        let mut observed = Observed {
            inner: &mut stdout,
            reporter: Some(&mut reporter),
            line: Vec::new(),
        };
        let record = promoted();
        // A record may arrive in pieces; only a whole line is a record.
        observed.write_all(&record.as_bytes()[..10]).unwrap();
        observed.write_all(&record.as_bytes()[10..]).unwrap();
        observed.write_all(b"\nnot json\n").unwrap();
        drop(observed);
        assert_eq!(stdout, format!("{record}\nnot json\n").into_bytes());
        assert_eq!(reporter.rows.len(), 1);
        assert_eq!(reporter.last_success.as_ref().unwrap()[2], "iam");
    }
}
