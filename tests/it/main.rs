//! The end-to-end suite, one test binary (as ripgrep's `tests/tests.rs` and
//! uv's `tests/it/main.rs`): the support code lives in the dev-only crate
//! `os-testkit` (`testkit/`, shared with the benchmark harness), and every
//! scenario module imports it as `use os_testkit as support;`.
//!
//! The suite runs the five real binaries, piped together, against real
//! registries started on 127.0.0.1. The tools it needs (docker-registry,
//! skopeo, cosign, oras, kubectl) are installed by `scripts/setup`; a test
//! that finds one missing fails and names that command.

mod acr_import;
mod acr_sign_in;
mod arm_standin;
mod attest;
mod azure_keyvault;
mod ci_host;
mod deploy;
mod digest;
mod faults;
mod harness;
mod import;
mod interop_vectors;
mod pipelines;
mod sign_verify;
