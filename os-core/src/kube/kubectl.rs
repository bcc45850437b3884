//! Runs `kubectl`: the one client of the Kubernetes API and of kustomize
//! that os-deploy uses, so it inherits the user's kubeconfig, contexts and
//! credential plugins (kubelogin on AKS) instead of re-implementing them.
//!
//! Every call has a deadline: a kubectl that hangs (an unreachable API
//! server, a credential plugin waiting for a browser) is killed, never
//! waited on forever.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::kube::manifest::ObjectName;
use crate::kube::process;

/// How long a kubectl call other than `rollout status` may take.
const CALL_DEADLINE: Duration = Duration::from_secs(120);
/// Extra time `rollout status` gets over its own `--timeout` before it is
/// killed (it normally stops itself); capped so a short timeout stays short.
const ROLLOUT_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum KubectlError {
    #[error(
        "cannot run {program}: {source} (kustomize directories and apply need kubectl; scripts/setup installs it, or give --kubectl PATH)"
    )]
    Spawn { program: String, source: std::io::Error },
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{command} did not finish within {seconds} s and was stopped")]
    Deadline { command: String, seconds: u64 },
    #[error("{command}: output is not what kubectl writes: {reason}")]
    BadOutput { command: String, reason: String },
}

pub use crate::kube::process::Finished;

/// The result of waiting for one workload's rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    Complete,
    Failed(String),
    TimedOut(String),
}

#[derive(Debug, Clone)]
pub struct Kubectl {
    pub program: PathBuf,
    /// `--context`: the kubeconfig context every cluster call uses.
    pub context: Option<String>,
}

impl Kubectl {
    pub fn new(program: impl Into<PathBuf>, context: Option<String>) -> Kubectl {
        Kubectl {
            program: program.into(),
            context,
        }
    }

    fn command(&self, cluster: bool) -> Command {
        let mut command = Command::new(&self.program);
        if cluster && let Some(context) = &self.context {
            command.arg("--context").arg(context);
        }
        command
    }

    /// Runs one call: `args` after the program (and `--context`), `stdin`
    /// fed to it, killed after `deadline`.
    fn call(
        &self,
        cluster: bool,
        args: &[String],
        stdin: Option<&[u8]>,
        deadline: Duration,
    ) -> Result<Finished, KubectlError> {
        let mut command = self.command(cluster);
        command.args(args);
        let shown = format!("kubectl {}", args.join(" "));
        run_with_deadline(command, &self.program, &shown, stdin, deadline)
    }

    fn call_ok(&self, cluster: bool, args: &[String], stdin: Option<&[u8]>) -> Result<String, KubectlError> {
        let finished = self.call(cluster, args, stdin, CALL_DEADLINE)?;
        if finished.success {
            Ok(finished.stdout)
        } else {
            Err(KubectlError::Failed {
                command: format!("kubectl {}", args.join(" ")),
                status: finished.status,
                stderr: finished.stderr.trim().to_string(),
            })
        }
    }

    /// `kubectl kustomize DIR`: the directory rendered as multi-document YAML.
    pub fn kustomize(&self, dir: &Path) -> Result<String, KubectlError> {
        self.call_ok(false, &["kustomize".into(), dir.display().to_string()], None)
    }

    /// The context calls go to: `--context`, else the kubeconfig's current
    /// one (None when there is no kubeconfig to ask).
    pub fn context_name(&self) -> Option<String> {
        if let Some(context) = &self.context {
            return Some(context.clone());
        }
        self.call_ok(false, &["config".into(), "current-context".into()], None)
            .ok()
            .map(|out| out.trim().to_string())
            .filter(|name| !name.is_empty())
    }

    /// The live objects among `objects` (those that do not exist yet are
    /// left out) as kubectl's JSON `List`.
    pub fn get(&self, namespace: &str, objects: &[ObjectName]) -> Result<serde_json::Value, KubectlError> {
        let mut args = vec!["get".to_string(), "--namespace".into(), namespace.into()];
        args.extend(
            objects
                .iter()
                .map(|o| format!("{}/{}", o.kind.to_lowercase(), o.name)),
        );
        args.extend(["--ignore-not-found".into(), "--output".into(), "json".into()]);
        let out = self.call_ok(true, &args, None)?;
        if out.trim().is_empty() {
            return Ok(serde_json::json!({ "items": [] }));
        }
        serde_json::from_str(&out).map_err(|error| KubectlError::BadOutput {
            command: format!("kubectl {}", args.join(" ")),
            reason: error.to_string(),
        })
    }

    /// `kubectl apply --server-side` of `manifests` (multi-document YAML on
    /// stdin), owned by the field manager `os-deploy`.
    pub fn apply(&self, namespace: &str, manifests: &str) -> Result<String, KubectlError> {
        let args: Vec<String> = [
            "apply",
            "--server-side",
            "--field-manager",
            "os-deploy",
            "--namespace",
            namespace,
            "--filename",
            "-",
        ]
        .map(String::from)
        .to_vec();
        self.call_ok(true, &args, Some(manifests.as_bytes()))
    }

    /// `kubectl rollout status` of one workload, waiting at most `timeout`.
    pub fn rollout_status(
        &self,
        namespace: &str,
        object: &ObjectName,
        timeout: Duration,
    ) -> Result<Rollout, KubectlError> {
        let args = vec![
            "rollout".to_string(),
            "status".into(),
            workload_arg(object),
            "--namespace".into(),
            namespace_of(object, namespace).into(),
            format!("--timeout={}s", timeout.as_secs()),
        ];
        let deadline = timeout + ROLLOUT_GRACE.min(timeout);
        match self.call(true, &args, None, deadline) {
            Ok(finished) if finished.success => Ok(Rollout::Complete),
            Ok(finished) => {
                let said = finished.stderr.trim().to_string();
                // kubectl's own message when --timeout passes.
                if said.contains("timed out waiting") {
                    Ok(Rollout::TimedOut(said))
                } else {
                    Ok(Rollout::Failed(if said.is_empty() {
                        finished.status
                    } else {
                        said
                    }))
                }
            }
            Err(KubectlError::Deadline { command, seconds }) => Ok(Rollout::TimedOut(format!(
                "{command} was still waiting after {seconds} s and was stopped"
            ))),
            Err(error) => Err(error),
        }
    }

    /// `kubectl rollout undo`: back to the workload's previous revision.
    pub fn rollout_undo(&self, namespace: &str, object: &ObjectName) -> Result<(), KubectlError> {
        let args = vec![
            "rollout".to_string(),
            "undo".into(),
            workload_arg(object),
            "--namespace".into(),
            namespace_of(object, namespace).into(),
        ];
        self.call_ok(true, &args, None).map(|_| ())
    }
}

fn workload_arg(object: &ObjectName) -> String {
    format!("{}/{}", object.kind.to_lowercase(), object.name)
}

/// The namespace an object lands in: its own, else the one given.
pub fn namespace_of<'a>(object: &'a ObjectName, namespace: &'a str) -> &'a str {
    object.namespace.as_deref().unwrap_or(namespace)
}

/// Kinds `kubectl rollout status` and `rollout undo` know.
pub fn has_rollout(kind: &str) -> bool {
    matches!(kind, "Deployment" | "StatefulSet" | "DaemonSet")
}

fn run_with_deadline(
    command: Command,
    program: &Path,
    shown: &str,
    stdin: Option<&[u8]>,
    deadline: Duration,
) -> Result<Finished, KubectlError> {
    process::run(command, stdin, Some(deadline)).map_err(|failure| match failure {
        process::Failure::Spawn(source) => KubectlError::Spawn {
            program: program.display().to_string(),
            source,
        },
        process::Failure::Deadline => KubectlError::Deadline {
            command: shown.to_string(),
            seconds: deadline.as_secs(),
        },
    })
}
