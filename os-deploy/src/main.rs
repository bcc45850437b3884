//! `os-deploy`: deploy verified images to Kubernetes by digest: render
//! pinned manifests, apply them with a rollout wait and rollback, or commit
//! them to a GitOps repository.
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args as ClapArgs, Parser, Subcommand};
use os_core::cli::{self, key_value};
use os_core::kube::kubectl::{self, Kubectl};
use os_core::steps::deploy::gitops::{self, GitopsOptions};
use os_core::steps::deploy::{self, ApplyOptions, Options, Outcome, RenderTo};

const TOOL: &str = concat!("os-deploy ", env!("CARGO_PKG_VERSION"));

/// Deploy the images of verified records (os-verify's output, on stdin) to
/// Kubernetes, pinned by digest. A record is deployed only when a `verify`
/// event vouches for its current image and digest, and a batch holding any
/// error record deploys nothing. Each deployed record gains a `deploy`
/// event; anything else leaves as an error record.
#[derive(Debug, Parser)]
#[command(name = "os-deploy", version, after_help = AFTER_HELP)]
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
        #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = kubectl::parse_duration)]
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

    /// The kubectl to run (kustomize directories, apply).
    #[arg(long, value_name = "PATH", default_value = "kubectl")]
    kubectl: PathBuf,

    /// Only errors on stderr.
    #[arg(short, long)]
    quiet: bool,
}

const AFTER_HELP: &str = "\
Examples:
  … | os-verify --key cosign.pub | os-deploy render k8s/iam/ | kubectl apply -f -
  … | os-verify --key cosign.pub | os-deploy render k8s/iam/ --records-out deployed.json > pinned.yaml
  … | os-verify --key cosign.pub | os-deploy apply k8s/iam/ --namespace iam --timeout 5m
  … | os-verify --key cosign.pub | os-deploy gitops --repo ../cluster-config --path apps/iam --push

Exit status:
  0  every record was deployed
  1  nothing was deployed: a record was unverified, failed upstream, matched
     no image, or the apply, rollout or commit failed (error records say why)
  2  usage error or unreadable input (records or manifests)";

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
            kubectl: Kubectl::new(&self.kubectl, None),
            tool: TOOL.to_string(),
        })
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    cli::exit_with("os-deploy", run(args))
}

fn stdin_records() -> anyhow::Result<std::io::BufReader<std::io::Stdin>> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        anyhow::bail!("os-deploy reads the records to deploy from stdin: pipe os-verify's output into it");
    }
    Ok(std::io::BufReader::new(stdin))
}

/// `--allow-unverified` must be impossible to miss.
fn warn(message: String) {
    eprintln!("os-deploy: WARNING: {message}");
}

fn report(outcome: &Outcome) {
    for message in &outcome.messages {
        eprintln!("os-deploy: error: {message}");
    }
}

fn run(args: Args) -> anyhow::Result<u8> {
    match args.mode {
        Mode::Render {
            common,
            out,
            records_out,
        } => {
            let options = common.options(true)?;
            let mut records_file = match &records_out {
                // Buffered: a record is written in many small pieces.
                Some(path) => Some(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("--records-out {}", path.display()))?,
                )),
                None => None,
            };
            let outcome = match deploy::prepare(&options, stdin_records()?, &mut warn) {
                Err(outcome) => outcome,
                Ok((batch, plan)) => {
                    let mut stdout = std::io::stdout().lock();
                    let to = match &out {
                        Some(dir) => RenderTo::Directory(dir),
                        None => RenderTo::Stdout(&mut stdout),
                    };
                    match deploy::render(&options, &plan, batch, to) {
                        Ok(outcome) => outcome,
                        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
                            return Ok(cli::exit::FAILED);
                        }
                        Err(error) => return Err(error).context("writing the manifests"),
                    }
                }
            };
            report(&outcome);
            match &mut records_file {
                Some(file) => {
                    write_records(&outcome, file).context("writing --records-out")?;
                    file.flush()?;
                }
                // Not kept, but still told to a CI host.
                None => write_records(&outcome, &mut std::io::sink())?,
            }
            if !common.quiet && outcome.exit_code == cli::exit::SUCCESS {
                let deployed = outcome.records.len();
                eprintln!("os-deploy: pinned the images of {deployed} record(s)");
                if records_out.is_none() {
                    eprintln!(
                        "os-deploy: the records were not kept: --records-out FILE keeps them for the audit trail"
                    );
                }
            }
            Ok(outcome.exit_code)
        }
        Mode::Apply {
            common,
            namespace,
            timeout,
            context,
        } => {
            let mut options = common.options(true)?;
            options.kubectl.context = context;
            let outcome = match deploy::prepare(&options, stdin_records()?, &mut warn) {
                Err(outcome) => outcome,
                Ok((batch, plan)) => {
                    let quiet = common.quiet;
                    let mut say = |message: String| {
                        if !quiet {
                            eprintln!("os-deploy: {message}");
                        }
                    };
                    deploy::apply(
                        &options,
                        &ApplyOptions { namespace, timeout },
                        &plan,
                        batch,
                        &mut say,
                    )
                }
            };
            report(&outcome);
            write_stdout(&outcome)
        }
        Mode::Gitops {
            common,
            repo,
            path,
            push,
        } => {
            if !common.paths.is_empty() {
                anyhow::bail!(
                    "gitops takes no manifest paths: the manifests are the kustomization at --path"
                );
            }
            let options = common.options(false)?;
            let gitops_options = GitopsOptions { repo, path, push };
            let outcome = gitops::run(&options, &gitops_options, stdin_records()?, &mut warn);
            report(&outcome);
            write_stdout(&outcome)
        }
    }
}

/// Writes the records, telling them to the CI host too (output variables,
/// annotations, the run summary) inside Azure Pipelines or GitHub Actions.
fn write_records(outcome: &Outcome, out: &mut impl std::io::Write) -> std::io::Result<()> {
    os_core::pipeline::ci_host::report("os-deploy", "deploy", out, |observed| outcome.write(observed))
}

fn write_stdout(outcome: &Outcome) -> anyhow::Result<u8> {
    let mut stdout = std::io::stdout().lock();
    match write_records(outcome, &mut stdout) {
        Ok(()) => Ok(outcome.exit_code),
        // The reader went away (`| head`): what was deployed stays deployed.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(outcome.exit_code),
        Err(error) => Err(error).context("writing records"),
    }
}
