//! Vulnerability reports in cosign's vuln predicate
//! (`https://cosign.sigstore.dev/attestation/vuln/v1`): a Trivy JSON report
//! turned into one, the findings read back out of one, and the plain-words
//! policy `os-verify` applies to them.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::oci::digest::Digest;

/// Trivy's severities, lowest first (`UNKNOWN` below them all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// `LOW`, `medium`, …: any case.
    pub fn parse(text: &str) -> Option<Severity> {
        match text.to_ascii_uppercase().as_str() {
            "UNKNOWN" => Some(Severity::Unknown),
            "LOW" => Some(Severity::Low),
            "MEDIUM" => Some(Severity::Medium),
            "HIGH" => Some(Severity::High),
            "CRITICAL" => Some(Severity::Critical),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Unknown => "UNKNOWN",
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        })
    }
}

/// Whether a predicate file is a Trivy JSON report (`trivy image -f json`).
pub fn is_trivy_report(report: &Value) -> bool {
    report.get("SchemaVersion").is_some() && report.get("Results").is_some()
}

/// A Trivy report as cosign's vuln predicate: the report under
/// `scanner.result`, Trivy as the scanner, the scan's time (Trivy's
/// `CreatedAt`, else `now`) as start and finish, `invocation.uri` the CI
/// run when there is one.
pub fn from_trivy(report: Value, run: Option<&str>, now: DateTime<Utc>) -> Value {
    let version = report
        .pointer("/Trivy/Version")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let scanned = report
        .get("CreatedAt")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now)
        .to_rfc3339_opts(SecondsFormat::Secs, true);
    let uri = if version.is_empty() {
        "pkg:github/aquasecurity/trivy".to_string()
    } else {
        format!("pkg:github/aquasecurity/trivy@{version}")
    };
    json!({
        "invocation": {"parameters": null, "uri": run.unwrap_or_default(), "event_id": "", "builder.id": ""},
        "scanner": {"uri": uri, "version": version, "db": {"uri": "", "version": ""}, "result": report},
        "metadata": {"scanStartedOn": scanned, "scanFinishedOn": scanned},
    })
}

/// When a report names an image digest (its `ArtifactName` pinned by
/// digest, its `Metadata.RepoDigests`) and none of them is `digest`, what
/// it names instead: a scan of another image proves nothing.
pub fn names_another_digest(report: &Value, digest: &Digest) -> Option<String> {
    let mut named = Vec::new();
    if let Some(name) = report.get("ArtifactName").and_then(Value::as_str)
        && name.contains("@sha256:")
    {
        named.push(name.to_string());
    }
    let repo_digests = report
        .pointer("/Metadata/RepoDigests")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str);
    named.extend(repo_digests.map(str::to_string));
    let ours = digest.to_string();
    let matches = |name: &String| name.rsplit_once('@').is_some_and(|(_, d)| d == ours);
    (!named.is_empty() && !named.iter().any(matches)).then(|| named.join(", "))
}

/// One finding of a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub id: String,
    pub package: String,
    pub installed: String,
    pub severity: Severity,
    pub fixed: bool,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}) in {} {}",
            self.id, self.severity, self.package, self.installed
        )?;
        if !self.fixed {
            f.write_str(", no fix yet")?;
        }
        Ok(())
    }
}

/// The findings of a vuln predicate's Trivy report (`scanner.result`).
pub fn findings(predicate: &Value) -> Vec<Finding> {
    let results = predicate
        .pointer("/scanner/result/Results")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    let vulnerabilities = results.flat_map(|result| {
        result
            .get("Vulnerabilities")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
    });
    let text = |v: &Value, field: &str| {
        v.get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    vulnerabilities
        .map(|v| Finding {
            id: text(v, "VulnerabilityID"),
            package: text(v, "PkgName"),
            installed: text(v, "InstalledVersion"),
            severity: Severity::parse(&text(v, "Severity")).unwrap_or(Severity::Unknown),
            fixed: !text(v, "FixedVersion").is_empty(),
        })
        .collect()
}

/// `os-verify`'s rules for a vuln attestation, in plain words.
#[derive(Clone, Debug, Default)]
pub struct VulnPolicy {
    /// `--fail-on-severity`: refuse a finding at this level or above.
    pub fail_on: Option<Severity>,
    /// `--ignore-unfixed`: findings without a fixed version do not count.
    pub ignore_unfixed: bool,
    /// `--ignore-vuln ID`: accepted risks.
    pub ignored: BTreeSet<String>,
    /// `--max-scan-age`: the scan must have finished within this.
    pub max_scan_age: Option<Duration>,
}

/// What the policy made of one report: the accepted risks it used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Judged {
    pub ignored_used: Vec<String>,
}

impl VulnPolicy {
    pub fn is_empty(&self) -> bool {
        self.fail_on.is_none() && self.max_scan_age.is_none()
    }

    /// The predicate against the rules at `now`: what it used, or the rule
    /// and the finding that refuse it.
    pub fn judge(&self, predicate: &Value, now: DateTime<Utc>) -> Result<Judged, String> {
        if let Some(age) = self.max_scan_age {
            let finished = predicate
                .pointer("/metadata/scanFinishedOn")
                .and_then(Value::as_str)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .ok_or("--max-scan-age: the report has no metadata.scanFinishedOn")?;
            let old = now.signed_duration_since(finished.with_timezone(&Utc));
            if old.to_std().is_ok_and(|old| old > age) {
                return Err(format!(
                    "--max-scan-age {}s: the scan finished at {finished}, {}s ago",
                    age.as_secs(),
                    old.num_seconds()
                ));
            }
        }
        let mut judged = Judged::default();
        let Some(threshold) = self.fail_on else {
            return Ok(judged);
        };
        for finding in findings(predicate) {
            if finding.severity < threshold || (self.ignore_unfixed && !finding.fixed) {
                continue;
            }
            if self.ignored.contains(&finding.id) {
                if !judged.ignored_used.contains(&finding.id) {
                    judged.ignored_used.push(finding.id.clone());
                }
                continue;
            }
            return Err(format!("--fail-on-severity {threshold}: {finding}"));
        }
        Ok(judged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Value {
        json!({"SchemaVersion": 2, "ArtifactName": "reg/iam@sha256:aa", "Results": [{"Vulnerabilities": [
            {"VulnerabilityID": "CVE-2024-3094", "PkgName": "xz-utils", "InstalledVersion": "5.6.0", "FixedVersion": "5.6.1", "Severity": "CRITICAL"},
            {"VulnerabilityID": "CVE-2023-0001", "PkgName": "zlib", "InstalledVersion": "1.2", "Severity": "HIGH"},
            {"VulnerabilityID": "CVE-2023-0002", "PkgName": "bash", "InstalledVersion": "5.1", "FixedVersion": "5.2", "Severity": "LOW"},
        ]}]})
    }

    #[test]
    fn the_policy_names_the_rule_and_the_finding() {
        let now = Utc::now();
        let predicate = from_trivy(report(), None, now);
        let policy = VulnPolicy {
            fail_on: Some(Severity::High),
            ..VulnPolicy::default()
        };
        let refused = policy.judge(&predicate, now).unwrap_err();
        assert_eq!(
            refused,
            "--fail-on-severity HIGH: CVE-2024-3094 (CRITICAL) in xz-utils 5.6.0"
        );
        let accepting = VulnPolicy {
            ignore_unfixed: true,
            ignored: ["CVE-2024-3094".to_string()].into(),
            ..policy
        };
        assert_eq!(
            accepting.judge(&predicate, now).unwrap().ignored_used,
            vec!["CVE-2024-3094"]
        );
        let critical_only = VulnPolicy {
            fail_on: Severity::parse("critical"),
            ignored: ["CVE-2024-3094".to_string()].into(),
            ..VulnPolicy::default()
        };
        assert!(critical_only.judge(&predicate, now).is_ok());
    }

    #[test]
    fn old_scans_and_other_images_are_refused() {
        let scanned = Utc::now() - chrono::Duration::days(3);
        let predicate = from_trivy(report(), None, scanned);
        let policy = VulnPolicy {
            max_scan_age: Some(Duration::from_secs(86_400)),
            ..VulnPolicy::default()
        };
        assert!(
            policy
                .judge(&predicate, Utc::now())
                .unwrap_err()
                .contains("--max-scan-age")
        );
        let digest: Digest = format!("sha256:{}", "b".repeat(64)).parse().unwrap();
        assert_eq!(
            names_another_digest(&report(), &digest).as_deref(),
            Some("reg/iam@sha256:aa")
        );
        let unpinned = json!({"SchemaVersion": 2, "ArtifactName": "reg/iam:1.0", "Results": []});
        assert_eq!(names_another_digest(&unpinned, &digest), None);
    }
}
