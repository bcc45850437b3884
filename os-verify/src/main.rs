//! `os-verify`: check cosign signatures before anything is deployed.
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use os_core::cli::{self, CommonArgs, key_value, runtime};
use os_core::oci::layout::Layout;
use os_core::signing::azure::CredentialKind;
use os_core::signing::key::{KeyRef, Password, PublicKey};
use os_core::steps::verify::{self, Identity, SignatureSource, VerifyPolicy};

/// Verify the cosign signatures of each record's digest at its current
/// image, and pass verified records on with a `verify` event. A record
/// that fails becomes an error record whose `error.code` says why:
/// no-signature, key-mismatch, digest-mismatch, identity-mismatch,
/// annotation-mismatch, malformed-signature or registry-error.
///
/// Needs no network beyond the registry: no transparency log, no TUF root.
#[derive(Debug, Parser)]
#[command(name = "os-verify", version, after_help = AFTER_HELP)]
struct Args {
    /// Public key (PEM file, env://VAR, azurekms://VAULT_HOST/KEY[/VERSION]); repeatable:
    /// any one may match.
    #[arg(long = "key", value_name = "KEY", required = true)]
    keys: Vec<String>,

    /// Which Azure credential reaches an azurekms:// key (its public key is
    /// fetched once; verification is local).
    #[arg(long, value_enum, default_value_t = CredentialKind::Auto)]
    azure_credential: CredentialKind,

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

const AFTER_HELP: &str = "\
Examples:
  os-digest reg/iam:1.4.2 | os-sign --key cosign.key | os-verify --key cosign.pub
  os-verify --key cosign.pub dev.example.com/iam@sha256:…
  os-verify --key cosign.pub --offline ./airgap < records.json
  … | os-verify --key cosign.pub --identity exact --identity-remap dev.example.com/onestream=prod.example.com/onestream

Exit status:
  0  every record succeeded
  1  at least one record failed (it was written out as an error record)
  2  usage error or unreadable input (the message names the line)";

fn main() -> ExitCode {
    let args = Args::parse();
    args.common.init_logging();
    cli::exit_with("os-verify", run(args))
}

fn run(args: Args) -> anyhow::Result<u8> {
    let keys = args
        .keys
        .iter()
        .map(|text| {
            let key: KeyRef = text.parse()?;
            runtime()
                .block_on(PublicKey::load(
                    &key,
                    &Password::EnvOrPrompt,
                    args.azure_credential,
                ))
                .with_context(|| format!("loading --key {text}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let source = match &args.offline {
        Some(dir) => SignatureSource::Layout(std::sync::Arc::new(
            Layout::open(dir).with_context(|| format!("--offline {}", dir.display()))?,
        )),
        None => SignatureSource::Registry,
    };
    let policy = VerifyPolicy {
        source,
        keys,
        identity: args.identity,
        remaps: args.remaps,
        annotations: args.annotations.into_iter().collect(),
        tool: concat!("os-verify ", env!("CARGO_PKG_VERSION")).to_string(),
    };
    let stdin = std::io::BufReader::new(std::io::stdin());
    let mut stdout = std::io::stdout().lock();
    Ok(verify::run(
        policy,
        &args.common,
        args.references,
        stdin,
        &mut stdout,
    )?)
}
