//! `os-deploy render`: the pinned manifests to stdout or a directory.

use std::fs::File;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{
    Batch, DeployError, Options, Outcome, Placement, Plan, TOOL, finish, prepare, report, warn, write_records,
};
use crate::kube::manifest::Input;
use crate::pipeline::exit;

/// Where `render` writes the pinned manifests.
pub enum RenderTo<'a> {
    Stdout(&'a mut dyn Write),
    Directory(&'a Path),
}

/// The file name a manifest gets under `--out DIR`.
fn out_name(input: &Input) -> PathBuf {
    match input {
        Input::File(path) => PathBuf::from(path.file_name().unwrap_or(path.as_os_str())),
        Input::Kustomize(dir) => {
            let name = std::path::absolute(dir)
                .ok()
                .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "kustomization".into());
            PathBuf::from(format!("{name}.yaml"))
        }
    }
}

/// `render`: the pinned manifests to stdout or a directory; each record
/// gains a `deploy` event (mode `render`).
pub fn render(options: &Options, plan: &Plan, batch: Batch, to: RenderTo<'_>) -> std::io::Result<Outcome> {
    let output = match to {
        RenderTo::Stdout(out) => {
            out.write_all(plan.joined().as_bytes())?;
            out.flush()?;
            "stdout".to_string()
        }
        RenderTo::Directory(dir) => {
            let names: Vec<PathBuf> = plan.inputs.iter().map(out_name).collect();
            let mut seen = std::collections::BTreeSet::new();
            for name in &names {
                if !seen.insert(name) {
                    return Err(std::io::Error::other(format!(
                        "--out {}: two inputs would both be written to {} (rename one)",
                        dir.display(),
                        name.display()
                    )));
                }
            }
            std::fs::create_dir_all(dir)?;
            for (name, text) in names.iter().zip(&plan.rendered) {
                std::fs::write(dir.join(name), text)?;
            }
            dir.display().to_string()
        }
    };
    // In a render, what came before is what the manifest said.
    let previous = |p: &Placement| Value::from(p.previous.clone());
    Ok(finish(options, "render", plan, batch, &previous, |event, _| {
        event.with("output", output.clone())
    }))
}

/// Where a render's output goes.
pub struct RenderOutput {
    /// One file per input in this directory, instead of stdout.
    pub out: Option<PathBuf>,
    /// The records (with their deploy event) go here: stdout carries YAML.
    pub records_out: Option<PathBuf>,
    pub quiet: bool,
}

/// `os-deploy render`, whole: the records from `reader`, the manifests to
/// stdout or `--out`, the records to `--records-out` (and, either way, to
/// the CI host), what happened on stderr.
pub fn run_render(options: &Options, output: &RenderOutput, reader: impl BufRead) -> Result<u8, DeployError> {
    let mut records_file = match &output.records_out {
        // Buffered: a record is written in many small pieces.
        Some(path) => Some(BufWriter::new(File::create(path).map_err(|source| {
            DeployError::RecordsOut {
                path: path.clone(),
                source,
            }
        })?)),
        None => None,
    };
    let outcome = match prepare(options, reader, &mut warn) {
        Err(outcome) => outcome,
        Ok((batch, plan)) => {
            let mut stdout = std::io::stdout().lock();
            let to = match &output.out {
                Some(dir) => RenderTo::Directory(dir),
                None => RenderTo::Stdout(&mut stdout),
            };
            match render(options, &plan, batch, to) {
                Ok(outcome) => outcome,
                Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => return Ok(exit::FAILED),
                Err(error) => return Err(DeployError::Manifests(error)),
            }
        }
    };
    report(&outcome);
    let written = match (&mut records_file, &output.records_out) {
        (Some(file), Some(path)) => {
            write_records(&outcome, file)
                .and_then(|()| file.flush())
                .map_err(|source| DeployError::RecordsOut {
                    path: path.clone(),
                    source,
                })
        }
        // Not kept, but still told to a CI host.
        _ => write_records(&outcome, &mut std::io::sink()).map_err(DeployError::Records),
    };
    written?;
    if !output.quiet && outcome.exit_code == exit::SUCCESS {
        let deployed = outcome.records.len();
        eprintln!("{TOOL}: pinned the images of {deployed} record(s)");
        if output.records_out.is_none() {
            eprintln!("{TOOL}: the records were not kept: --records-out FILE keeps them for the audit trail");
        }
    }
    Ok(outcome.exit_code)
}
