//! `os-import`: promote the same bytes by digest, attachments included.
use std::process::ExitCode;

use clap::Parser;
use os_core::cli::{self, CommonArgs};
use os_core::steps::import::{self, Destination, ImportOptions, Importer, ServerSideOptions, Via};

/// Copy each record's artifact by digest — exact manifest bytes, every
/// blob, every platform of an index, and its cosign signatures,
/// attestations, SBOMs and OCI 1.1 referrers — to another registry or an
/// OCI layout, and pass the record on with `image` set to the target.
#[derive(Debug, Parser)]
#[command(name = import::TOOL, version, after_help = cli::after_help(EXAMPLES))]
struct Args {
    /// REGISTRY (same repository path), REGISTRY/PREFIX (PREFIX/<last
    /// segment of the repository>), or oci:DIR.
    #[arg(long, value_name = "TARGET", required_unless_present = "to_repo", value_parser = Destination::parse_to)]
    to: Option<Destination>,

    /// Exactly this repository (REGISTRY/REPOSITORY) instead of --to.
    #[arg(long, value_name = "REPOSITORY", conflicts_with = "to")]
    to_repo: Option<String>,

    /// Also tag the target (repeatable); the record's own tag is applied too.
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,

    /// Leave signatures, attestations, SBOMs and referrers behind.
    #[arg(long)]
    no_signatures: bool,

    /// Copy only this platform of an index (OS/ARCH[/VARIANT], repeatable).
    /// This writes a new index, so the digest changes and the index's
    /// signatures stay behind: it needs --allow-digest-change.
    #[arg(long = "platform", value_name = "OS/ARCH[/VARIANT]", requires = "allow_digest_change",
          value_parser = platform)]
    platforms: Vec<String>,

    /// Accept that --platform gives the target a new digest (the record's
    /// digest is updated and the import event names the source digest).
    #[arg(long, requires = "platforms")]
    allow_digest_change: bool,

    /// How the image's bytes travel: this process copies them, or the
    /// target Azure Container Registry imports them server-side (the
    /// attachments are carried by this process either way).
    #[arg(long, value_enum, value_name = "WAY", default_value_t = Via::Copy)]
    via: Via,

    /// The Azure subscription of the target registry (--via acr-import|auto).
    #[arg(
        long,
        value_name = "ID",
        env = "AZURE_SUBSCRIPTION_ID",
        hide_env_values = true
    )]
    subscription: Option<String>,

    /// Azure Resource Manager's endpoint (sovereign clouds, tests).
    #[arg(long, value_name = "URL", default_value = "https://management.azure.com")]
    arm_endpoint: String,

    /// --via acr-import: import even when a target tag names another
    /// digest, moving it (ARM's mode Force; the event lists the tags moved).
    #[arg(long)]
    force: bool,

    /// --via acr-import: how long one import operation may run.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = cli::parse_duration)]
    timeout: std::time::Duration,

    /// Images to import ad hoc (resolved to digests first).
    #[arg(value_name = "REFERENCE")]
    references: Vec<String>,

    #[command(flatten)]
    common: CommonArgs,
}

const EXAMPLES: &str = "\
  os-digest dev.example.com/onestream/iam:1.4.2 | os-sign --key k | os-import --to prod.example.com/onestream
  os-import --to prod.example.com/onestream dev.example.com/onestream/iam@sha256:…
  os-import --to onestreamprod.azurecr.io/onestream --via acr-import --subscription $SUB < records
  os-import --to oci:./airgap dev.example.com/onestream/iam@sha256:…
  os-import --to dev.example.com/onestream oci:./build/iam:1.4.2
  os-import --to oci:./edge --platform linux/arm64 --allow-digest-change dev.example.com/onestream/iam:1.4.2";

fn platform(text: &str) -> Result<String, String> {
    let parts: Vec<&str> = text.split('/').collect();
    if (2..=3).contains(&parts.len()) && parts.iter().all(|part| !part.is_empty()) {
        Ok(text.to_string())
    } else {
        Err("expected OS/ARCH or OS/ARCH/VARIANT, e.g. linux/amd64 or linux/arm64/v8".into())
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let destination = match (args.to, args.to_repo) {
        (Some(destination), _) => Ok(destination),
        (None, Some(repository)) => repository
            .parse()
            .map(Destination::Repository)
            .map_err(|e| format!("--to-repo {repository:?}: {e}")),
        (None, None) => Err("--to or --to-repo is required".to_string()),
    };
    let (tags, attachments, platforms) = (args.tags, !args.no_signatures, args.platforms);
    let server_side = ServerSideOptions {
        via: args.via,
        subscription: args.subscription,
        arm_endpoint: Some(args.arm_endpoint),
        credential: args.common.azure_credential,
        force: args.force,
        timeout: args.timeout,
    };
    cli::run_step_with(&args.common, args.references, |run| {
        let options = ImportOptions {
            destination: destination?,
            tags,
            attachments,
            platforms,
            server_side,
        };
        Importer::new(options, run).map_err(|e| e.to_string())
    })
}
