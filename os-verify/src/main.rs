//! `os-verify`: check cosign signatures before anything is deployed.
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use os_core::cli::{self, CommonArgs, key_value};
use os_core::oci::layout::Layout;
use os_core::pipeline::runtime;
use os_core::signing::attestation::VULN_PREDICATE;
use os_core::signing::key::{KeyRef, Password, PublicKey};
use os_core::signing::vuln::{Severity, VulnPolicy};
use os_core::steps::verify::{
    self, Identity, SignatureSource, Verification, VerifyPolicy, WantedAttestation,
};

/// Verify the cosign signatures of each record's digest at its current
/// image, and pass verified records on with a `verify` event. A record
/// that fails becomes an error record whose `error.code` says why:
/// no-signature, key-mismatch, digest-mismatch, identity-mismatch,
/// annotation-mismatch, malformed-signature, no-attestation,
/// attestation-policy or registry-error.
///
/// Needs no network beyond the registry: no transparency log, no TUF root.
#[derive(Debug, Parser)]
#[command(name = verify::TOOL, version, after_help = cli::after_help(EXAMPLES))]
struct Args {
    /// Public key (PEM file, env://VAR, azurekms://VAULT_HOST/KEY[/VERSION]); repeatable:
    /// any one may match.
    #[arg(long = "key", value_name = "KEY", required = true)]
    keys: Vec<String>,

    /// How the signed docker-reference must match the record's image.
    /// cosign verify does not check it at all (`any`).
    #[arg(long, value_enum, default_value_t = Identity::Repository)]
    identity: Identity,

    /// Treat a signed reference under FROM as if under TO (images signed in
    /// dev, verified after import). Repeatable.
    #[arg(long = "identity-remap", value_name = "FROM=TO", value_parser = key_value)]
    remaps: Vec<(String, String)>,

    /// Annotation the signature must carry (repeatable).
    #[arg(long = "annotation", short = 'a', value_name = "KEY=VALUE", value_parser = key_value)]
    annotations: Vec<(String, String)>,

    /// Also require a signed in-toto attestation of this type (cosign's
    /// names: slsaprovenance, slsaprovenance1, spdxjson, cyclonedx, vuln,
    /// openvex, link, custom; or any URI) for the digest, signed by one of
    /// the keys, in the sha256-<hex>.att manifest. Repeatable.
    #[arg(long = "attestation", value_name = "TYPE", value_parser = attestation)]
    attestations: Vec<WantedAttestation>,

    /// --attestation vuln: refuse a finding at this severity or above
    /// (LOW, MEDIUM, HIGH, CRITICAL; any case).
    #[arg(long, value_name = "SEVERITY", value_parser = severity)]
    fail_on_severity: Option<Severity>,

    /// --attestation vuln: findings without a fixed version do not count.
    #[arg(long)]
    ignore_unfixed: bool,

    /// --attestation vuln: an accepted risk (repeatable); the verify event
    /// lists each one a report needed.
    #[arg(long = "ignore-vuln", value_name = "ID")]
    ignore_vulns: Vec<String>,

    /// --attestation vuln: refuse a scan that finished longer ago than this
    /// (90m, 24h, 7d).
    #[arg(long, value_name = "DURATION", value_parser = cli::parse_duration)]
    max_scan_age: Option<std::time::Duration>,

    /// --attestation slsaprovenance…: the provenance's builder must be this
    /// (its runDetails.builder.id, or builder.id in v0.2). The provenance's
    /// source commit must always equal the record's source.commit when both
    /// name one.
    #[arg(long, value_name = "ID")]
    provenance_builder: Option<String>,

    /// Read signatures from this OCI image layout instead of the registry
    /// (an air-gapped site's export): no network at all.
    #[arg(long, value_name = "DIR")]
    offline: Option<std::path::PathBuf>,

    /// Pinned references to verify ad hoc: REPOSITORY@sha256:….
    #[arg(value_name = "REFERENCE")]
    references: Vec<String>,

    #[command(flatten)]
    common: CommonArgs,
}

const EXAMPLES: &str = "\
  os-digest reg/iam:1.4.2 | os-sign --key cosign.key | os-verify --key cosign.pub
  os-verify --key cosign.pub dev.example.com/iam@sha256:…
  os-verify --key cosign.pub --offline ./airgap < records.json
  … | os-verify --key cosign.pub --attestation slsaprovenance1 --attestation vuln --fail-on-severity high --max-scan-age 24h
  … | os-verify --key cosign.pub --identity exact --identity-remap dev.example.com/onestream=prod.example.com/onestream";

fn severity(text: &str) -> Result<Severity, String> {
    Severity::parse(text).ok_or_else(|| format!("expected LOW, MEDIUM, HIGH or CRITICAL, got {text:?}"))
}

fn attestation(text: &str) -> Result<WantedAttestation, String> {
    WantedAttestation::named(text).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    cli::run_step_with(
        &args.common,
        args.references,
        |_| -> anyhow::Result<Verification> {
            let keys = args
                .keys
                .iter()
                .map(|text| {
                    let key: KeyRef = text.parse()?;
                    runtime()
                        .block_on(PublicKey::load(
                            &key,
                            &Password::EnvOrPrompt,
                            args.common.azure_credential,
                        ))
                        .with_context(|| format!("loading --key {text}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let vuln = VulnPolicy {
                fail_on: args.fail_on_severity,
                ignore_unfixed: args.ignore_unfixed,
                ignored: args.ignore_vulns.iter().cloned().collect(),
                max_scan_age: args.max_scan_age,
            };
            let asks_vuln = args
                .attestations
                .iter()
                .any(|a| a.predicate_type == VULN_PREDICATE);
            let vuln_flags = !vuln.is_empty() || vuln.ignore_unfixed || !vuln.ignored.is_empty();
            if vuln_flags && !asks_vuln {
                anyhow::bail!(
                    "--fail-on-severity, --ignore-unfixed, --ignore-vuln and --max-scan-age judge a vuln attestation: add --attestation vuln"
                );
            }
            let source = match &args.offline {
                Some(dir) => SignatureSource::Layout(std::sync::Arc::new(
                    Layout::open(dir).with_context(|| format!("--offline {}", dir.display()))?,
                )),
                None => SignatureSource::Registry,
            };
            Ok(Verification(VerifyPolicy {
                source,
                keys,
                identity: args.identity,
                remaps: args.remaps,
                annotations: args.annotations.into_iter().collect(),
                attestations: args.attestations,
                vuln,
                provenance_builder: args.provenance_builder,
            }))
        },
    )
}
