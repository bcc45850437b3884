//! The real cosign (2.5, Debian's package) as an interoperability peer,
//! run fully offline against a local registry.

use std::path::Path;
use std::process::{Command, Output};

/// Runs cosign with `COSIGN_PASSWORD` and a private HOME (cosign caches TUF
/// roots there; nothing may leak between tests or reach the network).
pub fn cosign(args: &[&str], password: &str, home: &Path) -> Output {
    super::registry::ensure_tools();
    let mut command = Command::new("cosign");
    command
        .args(args)
        .env("COSIGN_PASSWORD", password)
        .env("HOME", home);
    // OCI 1.1 referrers mode is experimental in cosign 2.5.
    if args.iter().any(|a| a.starts_with("--registry-referrers-mode")) {
        command.env("COSIGN_EXPERIMENTAL", "1");
    } else {
        command.env_remove("COSIGN_EXPERIMENTAL");
    }
    command.output().expect("run cosign (installed by scripts/setup)")
}

/// Runs cosign and panics with its output unless it succeeds.
pub fn cosign_ok(args: &[&str], password: &str, home: &Path) -> String {
    let output = cosign(args, password, home);
    assert!(
        output.status.success(),
        "cosign {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
