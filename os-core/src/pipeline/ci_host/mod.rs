//! Speaks the CI host's language: when a tool runs inside Azure Pipelines
//! (`TF_BUILD=True`) or GitHub Actions (`GITHUB_ACTIONS=true`), it also
//! publishes what it did the way that host expects, so later stages and
//! people use the result without parsing records:
//!
//! - output variables `image`, `digest` and `service` of the last successful
//!   record (`##vso[task.setvariable …;isOutput=true]`, `$GITHUB_OUTPUT`);
//! - one error annotation per record this tool failed
//!   (`##vso[task.logissue type=error]`, `::error::`);
//! - a markdown summary of every artifact the tool wrote — service, where it
//!   lives, digest, signer, imports, verification, deploy target — attached
//!   to the run (`##vso[task.uploadsummary]`, `$GITHUB_STEP_SUMMARY`).
//!
//! Guarantees: stdout is untouched (records only); every logging command goes
//! to stderr. In a pipe only the last tool's stdout reaches the agent, and
//! both hosts read commands from stderr too: the Azure Pipelines agent wires
//! `StepHost.OutputDataReceived` and `StepHost.ErrorDataReceived` to the same
//! handler, which calls `CommandManager.TryProcessCommand` on each line
//! (microsoft/azure-pipelines-agent, src/Agent.Worker/Handlers/NodeHandler.cs,
//! `OnDataReceived`; the Bash and AzureCLI tasks run on that handler), and the
//! GitHub runner gives stdout and stderr each an `OutputManager` that parses
//! workflow commands (actions/runner, src/Runner.Worker/Handlers/ScriptHandler.cs).
//! Values are escaped per host (`%AZP25`, `%0D`, `%0A`, `%3B`, `%5D` for
//! Azure; `%25`, `%0D`, `%0A`, `%3A`, `%2C` for GitHub), so a value can
//! neither end a command nor start another. Records never hold secrets; as a
//! second line of defence, the values of secret-looking environment
//! variables (`*PASSWORD*`, `*SECRET*`, `*TOKEN*`, `*PRIVATE_KEY*`) are
//! replaced with `***` in everything written here.

use std::io::{self, Write};
use std::path::PathBuf;

mod commands;
mod reporter;

use reporter::{Reporter, secret_values};

/// The CI system a tool runs in, with what it needs from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// Azure Pipelines; the summary is written into `AGENT_TEMPDIRECTORY`
    /// (none when the agent did not set it: nothing could upload it).
    Azure { temp_dir: Option<PathBuf> },
    /// GitHub Actions; the files the runner names for outputs and summary.
    GitHub {
        output: Option<PathBuf>,
        step_summary: Option<PathBuf>,
    },
}

impl Host {
    /// The host from the environment (`env` is injectable for tests; tools
    /// pass `std::env::var`). Azure wins when both are set, as in
    /// [`crate::pipeline::source::detect`].
    pub fn detect(env: &dyn Fn(&str) -> Option<String>) -> Option<Host> {
        let path = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        if env("TF_BUILD").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            Some(Host::Azure {
                temp_dir: path("AGENT_TEMPDIRECTORY"),
            })
        } else if env("GITHUB_ACTIONS").is_some_and(|v| v == "true") {
            Some(Host::GitHub {
                output: path("GITHUB_OUTPUT"),
                step_summary: path("GITHUB_STEP_SUMMARY"),
            })
        } else {
            None
        }
    }
}

/// Wraps a tool's stdout for [`crate::pipeline::driver::run_tool`]: outside CI it
/// only passes the records through; inside CI it also reports them when the
/// run is over. `step` tells this tool's failures from those it passed on.
pub fn report<W: Write, T>(
    tool: &str,
    step: &str,
    stdout: &mut W,
    run: impl FnOnce(&mut Observed<'_, W>) -> T,
) -> T {
    let env = |name: &str| std::env::var(name).ok();
    let mut reporter =
        Host::detect(&env).map(|host| Reporter::new(host, tool, step, secret_values(std::env::vars())));
    let mut observed = Observed {
        inner: stdout,
        reporter: reporter.as_mut(),
        line: Vec::new(),
    };
    let result = run(&mut observed);
    drop(observed);
    if let Some(reporter) = reporter {
        reporter.finish(&mut io::stderr().lock());
    }
    result
}

/// stdout, seen by the reporter one complete line (one record) at a time.
pub struct Observed<'a, W: Write> {
    inner: &'a mut W,
    reporter: Option<&'a mut Reporter>,
    line: Vec<u8>,
}

impl<W: Write> Write for Observed<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        if let Some(reporter) = self.reporter.as_deref_mut() {
            let mut rest = &buf[..written];
            while let Some(end) = rest.iter().position(|&b| b == b'\n') {
                self.line.extend_from_slice(&rest[..end]);
                reporter.observe_line(&self.line);
                self.line.clear();
                rest = &rest[end + 1..];
            }
            self.line.extend_from_slice(rest);
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
