//! Drives a tool over its input: records (or references) from stdin or the
//! arguments, worked on concurrently (bounded by `--jobs`) and written out
//! in input order, one line each, flushed as soon as it is ready so the
//! next tool in the pipe starts at once.
//!
//! The driver keeps the record rules every tool shares: error records pass
//! through untouched, a line that cannot be read becomes an error record
//! naming its line (exit 2), and a failed record makes the exit code 1.

use std::future::Future;
use std::io::{BufRead, Write};

use futures::StreamExt;
use futures::future::Either;

use crate::oci::registry::{Registry, RegistryError, RegistryOptions};
use crate::oci::store::Stores;
use crate::pipeline::exit;
use crate::record::{self, ErrorCode, Input, Origin, Record, field};

/// What a tool is asked to work on: a record without an error, or a bare
/// reference (from the arguments, or stdin where the tool accepts them).
#[derive(Debug)]
pub enum Work {
    Record(Record),
    Reference(String),
}

/// Where inputs come from.
pub enum Inputs<R> {
    Stdin { reader: R, references: bool },
    Arguments(Vec<String>),
}

/// What happened over the whole stream.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub written: usize,
    /// Records this tool failed or received already failed.
    pub failed: usize,
    /// Lines that could not be read as input.
    pub unreadable: usize,
    /// stdout was closed by the reader (e.g. `| head -1`).
    pub output_closed: bool,
}

impl Summary {
    pub fn exit_code(&self) -> u8 {
        if self.unreadable > 0 {
            exit::USAGE
        } else if self.failed > 0 {
            exit::FAILED
        } else {
            exit::SUCCESS
        }
    }
}

enum Item {
    Work(Origin, Work),
    PassThrough(Record),
    Unreadable(Origin, String),
}

/// What a run needs besides its step: how to reach registries and how much
/// to do at once (what the common flags say, without the flags).
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub registry: RegistryOptions,
    /// Records (and blob transfers) worked on at once.
    pub jobs: usize,
    /// Only errors on stderr (no progress line).
    pub quiet: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            registry: RegistryOptions::default(),
            jobs: 8,
            quiet: false,
        }
    }
}

/// Why a whole run could not start or finish (as opposed to one record
/// failing, which is an error record). Exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
}

/// One step of the promotion, as the driver runs it: each input (a record,
/// or a bare reference) becomes one output record. Problems become error
/// records; a step never fails as a whole once it is running.
pub trait Step {
    /// The binary, e.g. `os-digest`: it prefixes messages on stderr and,
    /// with the version, names the tool in history events.
    const TOOL: &'static str;
    /// The step's name in history events and error records, e.g. `digest`.
    const NAME: &'static str;

    fn work(&self, stores: &Stores, origin: Origin, work: Work) -> impl Future<Output = Record>;
}

/// The whole of a tool's run: inputs from `references`, else from `stdin`,
/// `step` over every one, the records out in input order on `stdout` (and
/// told to the CI host). Returns the exit code.
pub fn run_step<S: Step>(
    step: S,
    options: RunOptions,
    references: Vec<String>,
    stdin: impl BufRead + Send + 'static,
    stdout: &mut impl Write,
) -> Result<u8, RunError> {
    let stores = Stores::new(Registry::new(options.registry)?);
    let inputs = if references.is_empty() {
        Inputs::Stdin {
            reader: stdin,
            references: true,
        }
    } else {
        Inputs::Arguments(references)
    };
    let (step, stores) = (&step, &stores);
    let work = move |origin, work| step.work(stores, origin, work);
    // Inside Azure Pipelines or GitHub Actions the records are also told to
    // the host (output variables, annotations, run summary) on stderr.
    let summary = crate::pipeline::ci_host::report(S::TOOL, S::NAME, stdout, |stdout| {
        crate::pipeline::runtime().block_on(run(inputs, stdout, options.jobs, S::TOOL, S::NAME, work))
    })?;
    Ok(summary.exit_code())
}

/// Runs `work` over every input. `tool` (e.g. `os-digest`) prefixes the
/// human messages on stderr; `step` names the step in error records.
pub async fn run<R, F, Fut>(
    inputs: Inputs<R>,
    out: &mut impl Write,
    jobs: usize,
    tool: &str,
    step: &str,
    mut work: F,
) -> std::io::Result<Summary>
where
    R: BufRead + Send + 'static,
    F: FnMut(Origin, Work) -> Fut,
    Fut: Future<Output = Record>,
{
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Item>(jobs.max(1) * 4);
    // Reading stdin blocks; a thread feeds the async side so records are
    // worked on while later lines are still arriving.
    let reader = std::thread::spawn(move || match inputs {
        Inputs::Arguments(arguments) => {
            for (index, argument) in arguments.into_iter().enumerate() {
                let item = Item::Work(Origin::Argument(index + 1), Work::Reference(argument));
                if sender.blocking_send(item).is_err() {
                    return;
                }
            }
        }
        Inputs::Stdin { reader, references } => {
            for line in record::read_lines(reader, references) {
                let item = match line {
                    Ok(line) => {
                        let origin = Origin::Stdin(line.number);
                        match line.input {
                            Input::Record(record) if record.is_error() => Item::PassThrough(record),
                            Input::Record(record) => Item::Work(origin, Work::Record(record)),
                            Input::Reference(reference) => Item::Work(origin, Work::Reference(reference)),
                            Input::Malformed(message) => Item::Unreadable(origin, message),
                        }
                    }
                    Err(error) => {
                        Item::Unreadable(Origin::Stdin(0), format!("reading stdin failed: {error}"))
                    }
                };
                let stop = matches!(item, Item::Unreadable(Origin::Stdin(0), _));
                if sender.blocking_send(item).is_err() || stop {
                    return;
                }
            }
        }
    });
    let items = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx));
    let mut results = items
        .map(|item| match item {
            Item::Work(origin, input) => Either::Left({
                let future = work(origin, input);
                async move { (Some(origin), false, future.await) }
            }),
            Item::PassThrough(record) => Either::Right(futures::future::ready((None, false, record))),
            Item::Unreadable(origin, message) => {
                let mut record = Record::new();
                record.fail(step, ErrorCode::MalformedInput, format!("{origin}: {message}"));
                Either::Right(futures::future::ready((Some(origin), true, record)))
            }
        })
        .buffered(jobs.max(1));

    let mut summary = Summary::default();
    while let Some((origin, unreadable, record)) = results.next().await {
        if unreadable {
            summary.unreadable += 1;
        }
        if record.is_error() {
            summary.failed += 1;
            // Failures this tool found are told to the person too; failures
            // from upstream were already told by the tool that found them.
            if let Some(origin) = origin {
                let message = record.fields()[field::ERROR]["message"]
                    .as_str()
                    .unwrap_or("failed");
                let message = if message.starts_with(&origin.to_string()) {
                    message.to_string()
                } else {
                    format!("{origin}: {message}")
                };
                eprintln!("{tool}: error: {message}");
            }
        }
        let written = record.write_line(out).and_then(|()| out.flush());
        match written {
            Ok(()) => summary.written += 1,
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
                summary.output_closed = true;
                break;
            }
            Err(error) => return Err(error),
        }
    }
    drop(results);
    // The reader thread ends once the channel is closed or input is done.
    let _ = reader.join();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn order_is_kept_errors_pass_and_bad_lines_become_error_records() {
        let input = "r/a:1\n{\"image\":\"r.io/x\",\"error\":{\"step\":\"sign\",\"message\":\"upstream\"}}\n{oops\nr/b:2\n";
        let mut out = Vec::new();
        let summary = run(
            Inputs::Stdin {
                reader: input.as_bytes(),
                references: true,
            },
            &mut out,
            4,
            "os-test",
            "test",
            |origin, work| async move {
                // Later inputs finish first; output order must not change.
                if origin == Origin::Stdin(1) {
                    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
                }
                let mut record = Record::new();
                if let Work::Reference(reference) = work {
                    record.set("reference", reference);
                }
                record
            },
        )
        .await
        .unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0]["reference"], "r/a:1");
        assert_eq!(lines[1]["error"]["message"], "upstream");
        assert_eq!(lines[2]["error"]["code"], "malformed-input");
        assert!(
            lines[2]["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("stdin line 3: malformed JSON")
        );
        assert_eq!(lines[3]["reference"], "r/b:2");
        assert_eq!(summary.failed, 2);
        assert_eq!(summary.unreadable, 1);
        assert_eq!(summary.exit_code(), exit::USAGE);
    }
}
