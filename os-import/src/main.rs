//! `os-import`: not implemented yet; the crate exists so the workspace and its
//! end-to-end suite already know every tool by name.
use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("os-import: error: not implemented yet");
    ExitCode::from(2)
}
