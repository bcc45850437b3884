//! The five tools' binaries for the end-to-end suite.
//!
//! Cargo sets `CARGO_BIN_EXE_<name>` only for a package's own binaries, and
//! the tools are separate crates; so the suite builds the workspace's binaries once (a
//! no-op when `cargo test --workspace` already did) and runs them from the
//! target directory it was itself built into (a test binary in
//! `target/<profile>/deps/`, or a binary of this crate in `target/<profile>/`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub const TOOLS: [&str; 5] = ["os-digest", "os-sign", "os-import", "os-verify", "os-deploy"];

/// The Cargo workspace's root directory (this crate lives in `testkit/`).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ sits in the workspace root")
}

/// `target/<profile>` of the running executable: a test binary lives in
/// `target/<profile>/deps/`, a binary of this crate in `target/<profile>/`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("executable lives in a directory");
    let dir = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("target/<profile>/deps has a parent")
    } else {
        dir
    };
    dir.to_path_buf()
}

/// Path of a tool's binary, built if needed.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let dir = target_dir();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        // The whole workspace, as `cargo test --workspace` builds it (the
        // same feature unification, so nothing is rebuilt).
        build.args(["build", "--workspace", "--bins", "--quiet"]);
        // Into the target directory this executable runs from, whatever
        // CARGO_TARGET_DIR says now.
        if let Some(root) = dir.parent() {
            build.arg("--target-dir").arg(root);
        }
        build.current_dir(workspace_root());
        // Cargo gives test processes CARGO_MANIFEST_DIR and friends; build
        // scripts that track them (ring's does) would see a changed
        // environment and rebuild half the tree on every run.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy().into_owned();
            if name.starts_with("CARGO_") && name != "CARGO_HOME" && name != "CARGO_TARGET_DIR" {
                build.env_remove(name);
            }
        }
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build for the tools");
        assert!(status.success(), "building the tools failed: {status}");
        dir
    });
    let path = dir.join(name);
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// An `assert_cmd` command for a tool, with a clean environment for the
/// things that change its behaviour (CI variables, auth files).
pub fn tool(name: &str) -> assert_cmd::Command {
    let mut command = assert_cmd::Command::new(bin(name));
    for variable in [
        "TF_BUILD",
        "BUILD_SOURCEVERSION",
        "BUILD_REPOSITORY_URI",
        "BUILD_BUILDNUMBER",
        "BUILD_BUILDID",
        "GITHUB_ACTIONS",
        "GITHUB_SHA",
        "GITHUB_REPOSITORY",
        "GITHUB_RUN_ID",
        "GITHUB_SERVER_URL",
        "REGISTRY_AUTH_FILE",
        "OS_REGISTRY_USERNAME",
        "OS_REGISTRY_PASSWORD",
        "OS_LOG",
        "AZURE_SUBSCRIPTION_ID",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_AUTHORITY_HOST",
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
    ] {
        command.env_remove(variable);
    }
    // No auth file unless a test provides one.
    command.env("DOCKER_CONFIG", "/nonexistent/onestream-tests");
    command
}
