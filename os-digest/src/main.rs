//! `os-digest`: capture the immutable digest of images, as artifact records.
use std::process::ExitCode;

use clap::Parser;
use os_core::cli::{self, CommonArgs};
use os_core::pipeline::source::{self, SourceFlags};
use os_core::steps::digest::{self, Capture, CaptureOptions};

/// Resolve image references to their immutable digests and write one
/// artifact record (JSON) per image to stdout.
///
/// References come from the arguments, or one per line on stdin. Records on
/// stdin that already carry a digest are checked against their registry:
/// if the tag moved, the record becomes an error record.
#[derive(Debug, Parser)]
#[command(name = digest::TOOL, version, after_help = cli::after_help(EXAMPLES))]
struct Args {
    /// Image references: REGISTRY/REPO[:TAG][@sha256:…] or oci:DIR[:TAG].
    #[arg(value_name = "REFERENCE")]
    references: Vec<String>,

    /// Set `service` on the records.
    #[arg(long, value_name = "NAME", conflicts_with = "service_from_repo")]
    service: Option<String>,

    /// Set `service` to the repository's last path segment (…/onestream/iam → iam).
    #[arg(long)]
    service_from_repo: bool,

    /// Source commit (default: BUILD_SOURCEVERSION or GITHUB_SHA).
    #[arg(long, value_name = "SHA")]
    commit: Option<String>,

    /// Source repository URL (default: BUILD_REPOSITORY_URI or the GitHub repository).
    #[arg(long = "source-repository", value_name = "URL")]
    source_repository: Option<String>,

    /// CI run id (default: BUILD_BUILDNUMBER/BUILD_BUILDID or GITHUB_RUN_ID).
    #[arg(long, value_name = "ID")]
    run: Option<String>,

    #[command(flatten)]
    common: CommonArgs,
}

const EXAMPLES: &str = "\
  os-digest devacr.example.com/onestream/iam:1.4.2
  os-digest oci:./build/iam:1.4.2
  printf '%s\\n' reg/a:1 reg/b:2 | os-digest --service-from-repo
  os-digest reg.example.com/a:1 | jq -r .digest";

fn main() -> ExitCode {
    let args = Args::parse();
    let source = SourceFlags {
        commit: args.commit,
        repository: args.source_repository,
        run: args.run,
    };
    let options = CaptureOptions {
        service: args.service,
        service_from_repo: args.service_from_repo,
        source: source::detect(&source, &|name| std::env::var(name).ok()),
        ..CaptureOptions::default()
    };
    cli::run_step(&args.common, args.references, Capture(options))
}
