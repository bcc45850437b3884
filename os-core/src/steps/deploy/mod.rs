//! `os-deploy`'s step: the gate (a record is deployed only when a `verify`
//! event vouches for its current image and digest, and only when no record
//! of the batch failed upstream), matching records to container images,
//! and the all-or-nothing outcome of a batch: either every record is
//! deployed and carries a `deploy` event, or nothing is deployed and every
//! record leaves as an error record saying why.

use std::io::{BufRead, IsTerminal as _, Write};
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::kube::kubectl::Kubectl;
use crate::oci::digest::Digest;
use crate::oci::reference::RegistryRef;
use crate::pipeline::exit;
use crate::record::{ErrorCode, Event, Origin, Record};

mod apply;
mod gate;
pub mod gitops;
mod plan;
mod render;

pub use apply::{ApplyOptions, apply};
pub use gate::{Undeployable, Unverified, verification};
pub use gitops::GitopsOptions;
pub use plan::{Placement, Plan, PlanError, is_pinned, load_manifests, plan};
pub use render::{RenderOutput, RenderTo, render, run_render};

pub const STEP: &str = "deploy";

/// The binary whose step this is.
pub const TOOL: &str = "os-deploy";

/// One line of input and what became of it.
#[derive(Debug)]
pub struct Entry {
    pub origin: Origin,
    pub record: Record,
    /// Set when the record passed the gate.
    pub target: Option<Target>,
    /// Set when this tool failed the record.
    pub failure: Option<Failure>,
}

/// Why os-deploy failed a record, or the whole batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: ErrorCode,
    pub message: String,
}

impl Failure {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

/// Every record of the run: os-deploy needs the whole batch before it
/// deploys anything.
#[derive(Debug, Default)]
pub struct Batch {
    pub entries: Vec<Entry>,
    /// Lines that were not records (exit 2).
    pub unreadable: usize,
    /// Records that arrived as error records.
    pub upstream_failures: usize,
}

/// What a record deploys: its image pinned by digest.
#[derive(Debug, Clone)]
pub struct Target {
    pub service: Option<String>,
    pub image: RegistryRef,
    pub digest: Digest,
    /// False only when `--allow-unverified` let it through.
    pub verified: bool,
    /// The `keyId` of the verification (or the signature) that vouches.
    pub key_id: Option<String>,
}

impl Target {
    /// `registry/repository@sha256:…`: what the manifests will say.
    pub fn pinned(&self) -> String {
        format!("{}@{}", self.image.name(), self.digest)
    }
}

/// The options every mode shares.
#[derive(Debug, Clone)]
pub struct Options {
    pub paths: Vec<PathBuf>,
    /// `--map container=service`.
    pub maps: Vec<(String, String)>,
    pub require_digest: bool,
    pub allow_unverified: bool,
    /// `--require-attestation TYPE`: the verify event must list one.
    pub required_attestations: Vec<String>,
    pub kubectl: Kubectl,
}

/// What a run ends with: the records to write, the exit code, and the
/// messages for stderr.
#[derive(Debug)]
pub struct Outcome {
    pub records: Vec<Record>,
    pub exit_code: u8,
    pub messages: Vec<String>,
}

impl Outcome {
    pub fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        for record in &self.records {
            record.write_line(out)?;
        }
        out.flush()
    }
}

/// The `deploy` event for entry `index` of a deployed batch.
pub fn deploy_event(
    options: &Options,
    mode: &str,
    plan: &Plan,
    index: usize,
    target: &Target,
    previous: &dyn Fn(&Placement) -> Value,
) -> Event {
    let workloads: Vec<Value> = plan
        .placements_of(index)
        .map(|p| {
            let mut workload = json!({
                "kind": p.object.kind,
                "name": p.object.name,
                "container": p.container,
                "previous": previous(p),
            });
            if let Some(namespace) = &p.object.namespace {
                workload["namespace"] = namespace.clone().into();
            }
            workload
        })
        .collect();
    let mut event = Event::new(STEP, TOOL)
        .with("mode", mode)
        .with("image", target.pinned())
        .with("workloads", workloads)
        .with("verified", target.verified);
    if options.allow_unverified {
        event = event.with("allowUnverified", true);
    }
    event
}

/// Reads the batch, gates it, loads and pins the manifests: the plan, or
/// the outcome of a refused batch.
pub fn prepare(
    options: &Options,
    reader: impl BufRead,
    warn: &mut dyn FnMut(String),
) -> Result<(Batch, Plan), Outcome> {
    let mut batch = match Batch::read(reader) {
        Ok(batch) => batch,
        Err(error) => {
            return Err(Outcome {
                records: Vec::new(),
                exit_code: exit::USAGE,
                messages: vec![format!("reading stdin failed: {error}")],
            });
        }
    };
    if batch.entries.is_empty() {
        return Err(Outcome {
            records: Vec::new(),
            exit_code: exit::USAGE,
            messages: vec!["no records on stdin: os-deploy deploys the records os-verify writes".into()],
        });
    }
    if !batch.gate(options, warn) {
        return Err(batch.refuse(None));
    }
    let (inputs, manifests) = match load_manifests(&options.paths, &options.kubectl) {
        Ok(loaded) => loaded,
        Err(error) => return Err(batch.refuse(Some(Failure::new(ErrorCode::BadManifest, error.to_string())))),
    };
    match plan(&mut batch, inputs, manifests, options) {
        Ok(plan) => Ok((batch, plan)),
        Err(error) => Err(batch.refuse(error.batch_failure())),
    }
}

/// Appends a deploy event to every record of a deployed batch.
fn finish(
    options: &Options,
    mode: &str,
    plan: &Plan,
    batch: Batch,
    previous: &dyn Fn(&Placement) -> Value,
    mut extra: impl FnMut(Event, usize) -> Event,
) -> Outcome {
    let records = batch
        .entries
        .into_iter()
        .enumerate()
        .map(|(index, mut entry)| {
            if let Some(target) = &entry.target {
                let event = deploy_event(options, mode, plan, index, target, previous);
                entry.record.push_event(extra(event, index));
            }
            entry.record
        })
        .collect();
    Outcome {
        records,
        exit_code: exit::SUCCESS,
        messages: Vec::new(),
    }
}

// --- the run around a mode: stdin, stderr, the records out ----------------------

/// Why a run of os-deploy could not start or finish (exit 2), as opposed
/// to a refused batch, whose records say why.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("os-deploy reads the records to deploy from stdin: pipe os-verify's output into it")]
    StdinIsTerminal,
    #[error("--records-out {path}: {source}", path = path.display())]
    RecordsOut { path: PathBuf, source: std::io::Error },
    #[error("writing the manifests: {0}")]
    Manifests(#[source] std::io::Error),
    #[error("writing records: {0}")]
    Records(#[source] std::io::Error),
}

/// The records to deploy, from stdin: never a terminal (a person who runs
/// os-deploy alone is told what it wants).
pub fn stdin_records() -> Result<std::io::BufReader<std::io::Stdin>, DeployError> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(DeployError::StdinIsTerminal);
    }
    Ok(std::io::BufReader::new(stdin))
}

/// `--allow-unverified` must be impossible to miss.
fn warn(message: String) {
    eprintln!("{TOOL}: WARNING: {message}");
}

fn report(outcome: &Outcome) {
    for message in &outcome.messages {
        eprintln!("{TOOL}: error: {message}");
    }
}

/// Writes the records, telling them to the CI host too (output variables,
/// annotations, the run summary) inside Azure Pipelines or GitHub Actions.
fn write_records(outcome: &Outcome, out: &mut impl Write) -> std::io::Result<()> {
    crate::pipeline::ci_host::report(TOOL, STEP, out, |observed| outcome.write(observed))
}

/// The outcome's messages on stderr, its records on stdout; its exit code.
fn finish_on_stdout(outcome: &Outcome) -> Result<u8, DeployError> {
    report(outcome);
    let mut stdout = std::io::stdout().lock();
    match write_records(outcome, &mut stdout) {
        Ok(()) => Ok(outcome.exit_code),
        // The reader went away (`| head`): what was deployed stays deployed.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(outcome.exit_code),
        Err(error) => Err(DeployError::Records(error)),
    }
}

/// `os-deploy apply`, whole: the records from `reader`, progress on stderr
/// unless `quiet`, the records out on stdout.
pub fn run_apply(
    options: &Options,
    apply_options: &ApplyOptions,
    quiet: bool,
    reader: impl BufRead,
) -> Result<u8, DeployError> {
    let outcome = match prepare(options, reader, &mut warn) {
        Err(outcome) => outcome,
        Ok((batch, plan)) => {
            let mut say = |message: String| {
                if !quiet {
                    eprintln!("{TOOL}: {message}");
                }
            };
            apply(options, apply_options, &plan, batch, &mut say)
        }
    };
    finish_on_stdout(&outcome)
}

/// `os-deploy gitops`, whole: the records from `reader`, out on stdout.
pub fn run_gitops(
    options: &Options,
    gitops_options: &GitopsOptions,
    reader: impl BufRead,
) -> Result<u8, DeployError> {
    let outcome = gitops::run(options, gitops_options, reader, &mut warn);
    finish_on_stdout(&outcome)
}
