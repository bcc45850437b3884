//! Runs a child program (kubectl, git) to completion: optional stdin,
//! stdout and stderr captured, and an optional deadline after which the
//! child is killed rather than waited on forever.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a finished child said.
#[derive(Debug)]
pub struct Finished {
    pub success: bool,
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug)]
pub enum Failure {
    /// It could not be started (or waited for).
    Spawn(std::io::Error),
    /// It was still running at the deadline and was killed.
    Deadline,
}

pub fn run(
    mut command: Command,
    stdin: Option<&[u8]>,
    deadline: Option<Duration>,
) -> Result<Finished, Failure> {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(Failure::Spawn)?;
    // Pipes are fed and drained on threads so a chatty child never blocks on
    // a full pipe while we wait for it.
    let feeder = match (child.stdin.take(), stdin) {
        (Some(mut pipe), Some(bytes)) => {
            let bytes = bytes.to_vec();
            Some(std::thread::spawn(move || {
                // A child that exits without reading all of it is judged by
                // its exit status, not by our broken pipe.
                let _ = pipe.write_all(&bytes);
            }))
        }
        _ => None,
    };
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let started = Instant::now();
    let status = loop {
        match child.try_wait().map_err(Failure::Spawn)? {
            Some(status) => break status,
            None if deadline.is_some_and(|deadline| started.elapsed() >= deadline) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Failure::Deadline);
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    if let Some(feeder) = feeder {
        let _ = feeder.join();
    }
    Ok(Finished {
        success: status.success(),
        status: status.to_string(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hung_command_is_stopped_at_its_deadline() {
        let mut command = Command::new("sleep");
        command.arg("30");
        let started = Instant::now();
        let outcome = run(command, None, Some(Duration::from_millis(200)));
        assert!(matches!(outcome, Err(Failure::Deadline)), "{outcome:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn stdin_goes_in_and_both_streams_come_back() {
        let mut command = Command::new("sh");
        command.args(["-c", "cat; echo oops >&2; exit 3"]);
        let finished = run(command, Some(b"hello"), None).unwrap();
        assert!(!finished.success);
        assert_eq!(finished.stdout, "hello");
        assert_eq!(finished.stderr, "oops\n");
    }
}
