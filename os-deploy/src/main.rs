//! `os-deploy`: deploy verified images to Kubernetes by digest: render
//! pinned manifests, apply them with a rollout wait and rollback, or commit
//! them to a GitOps repository.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args as ClapArgs, Parser, Subcommand};
use os_core::cli::{self, key_value};
use os_core::kube::kubectl::Kubectl;
use os_core::pipeline::exit;
use os_core::steps::deploy::{self, ApplyOptions, GitopsOptions, Options, RenderOutput};

/// Deploy the images of verified records (os-verify's output, on stdin) to
/// Kubernetes, pinned by digest. A record is deployed only when a `verify`
/// event vouches for its current image and digest, and a batch holding any
/// error record deploys nothing. Each deployed record gains a `deploy`
/// event; anything else leaves as an error record.
#[derive(Debug, Parser)]
#[command(name = deploy::TOOL, version, after_help = cli::after_help_with(EXAMPLES, &EXIT_CODES))]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Write the manifests with every matching image pinned to
    /// IMAGE@DIGEST: to stdout (records go to --records-out) or --out DIR.
    Render {
        #[command(flatten)]
        common: Common,
        /// Write one file per input into this directory instead of stdout.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Write the records (with their deploy event) to this file: stdout
        /// carries YAML in this mode.
        #[arg(long, value_name = "FILE")]
        records_out: Option<PathBuf>,
    },
    /// Server-side apply of the pinned manifests, then wait for each
    /// workload's rollout; a failed or timed-out rollout is undone.
    Apply {
        #[command(flatten)]
        common: Common,
        /// Namespace for objects that do not name one.
        #[arg(long, short = 'n', value_name = "NS")]
        namespace: String,
        /// How long each rollout may take (300s, 5m, 1h).
        #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = cli::parse_duration)]
        timeout: std::time::Duration,
        /// The kubeconfig context to deploy to (default: the current one).
        #[arg(long, value_name = "CONTEXT")]
        context: Option<String>,
    },
    /// Set the records' images (name, newName, digest) in the kustomization
    /// at --path of a git repository and commit; --push pushes (never forced).
    Gitops {
        #[command(flatten)]
        common: Common,
        /// The GitOps repository's work tree.
        #[arg(long, value_name = "DIR")]
        repo: PathBuf,
        /// The kustomize directory inside it, e.g. apps/iam.
        #[arg(long, value_name = "PATH")]
        path: PathBuf,
        /// Push the commit to the branch's remote.
        #[arg(long)]
        push: bool,
    },
}

#[derive(Debug, ClapArgs)]
struct Common {
    /// Manifests: YAML files, directories of them, or kustomize directories
    /// (rendered with `kubectl kustomize`). Not used by gitops.
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,

    /// Match the container named CONTAINER to the record whose service is
    /// SERVICE, whatever its image says (repeatable).
    #[arg(long = "map", value_name = "CONTAINER=SERVICE", value_parser = key_value)]
    maps: Vec<(String, String)>,

    /// Fail when any image left in the manifests is not pinned by digest.
    #[arg(long, overrides_with = "no_require_digest", default_value_t = true)]
    require_digest: bool,

    /// Allow images pinned only by tag to remain.
    #[arg(long, overrides_with = "require_digest")]
    no_require_digest: bool,

    /// Deploy records without a verification. Loud, and recorded in the
    /// deploy event: for emergencies, not for pipelines.
    #[arg(long)]
    allow_unverified: bool,

    /// Refuse a record whose verify event does not list an accepted
    /// attestation of this type (os-verify --attestation TYPE); repeatable.
    #[arg(long = "require-attestation", value_name = "TYPE")]
    require_attestations: Vec<String>,

    /// The kubectl to run (kustomize directories, apply).
    #[arg(long, value_name = "PATH", default_value = "kubectl")]
    kubectl: PathBuf,

    /// Only errors on stderr.
    #[arg(short, long)]
    quiet: bool,
}

const EXAMPLES: &str = "\
  … | os-verify --key cosign.pub | os-deploy render k8s/iam/ | kubectl apply -f -
  … | os-verify --key cosign.pub | os-deploy render k8s/iam/ --records-out deployed.json > pinned.yaml
  … | os-verify --key cosign.pub | os-deploy apply k8s/iam/ --namespace iam --timeout 5m
  … | os-verify --key cosign.pub | os-deploy gitops --repo ../cluster-config --path apps/iam --push";

/// os-deploy's 1 means nothing was deployed at all.
const EXIT_CODES: [(u8, &str); 3] = [
    (exit::SUCCESS, "every record was deployed"),
    (
        exit::FAILED,
        "nothing was deployed: a record was unverified, failed upstream, matched\nno image, or the apply, rollout or commit failed (error records say why)",
    ),
    (
        exit::USAGE,
        "usage error or unreadable input (records or manifests)",
    ),
];

impl Common {
    fn options(&self, paths_needed: bool) -> anyhow::Result<Options> {
        if paths_needed && self.paths.is_empty() {
            anyhow::bail!("give the manifests to deploy: files, directories or kustomize directories");
        }
        Ok(Options {
            paths: self.paths.clone(),
            maps: self.maps.clone(),
            require_digest: self.require_digest && !self.no_require_digest,
            allow_unverified: self.allow_unverified,
            required_attestations: self.require_attestations.clone(),
            kubectl: Kubectl::new(&self.kubectl, None),
        })
    }

    fn gitops_options(&self) -> anyhow::Result<Options> {
        if !self.paths.is_empty() {
            anyhow::bail!("gitops takes no manifest paths: the manifests are the kustomization at --path");
        }
        self.options(false)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.mode {
        Mode::Render {
            common,
            out,
            records_out,
        } => common.options(true).and_then(|options| {
            let output = RenderOutput {
                out,
                records_out,
                quiet: common.quiet,
            };
            Ok(deploy::run_render(&options, &output, deploy::stdin_records()?)?)
        }),
        Mode::Apply {
            common,
            namespace,
            timeout,
            context,
        } => common.options(true).and_then(|mut options| {
            options.kubectl.context = context;
            let apply = ApplyOptions { namespace, timeout };
            Ok(deploy::run_apply(
                &options,
                &apply,
                common.quiet,
                deploy::stdin_records()?,
            )?)
        }),
        Mode::Gitops {
            common,
            repo,
            path,
            push,
        } => common.gitops_options().and_then(|options| {
            let gitops = GitopsOptions { repo, path, push };
            Ok(deploy::run_gitops(&options, &gitops, deploy::stdin_records()?)?)
        }),
    };
    cli::exit_with(deploy::TOOL, result)
}
