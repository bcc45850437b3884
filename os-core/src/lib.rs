//! `os-core`: the library behind the OneStream promotion tools.
//!
//! Each `os-*` binary parses its flags ([`cli`], the only module that
//! names clap) and calls one step in [`steps`]. The steps stand on four
//! rooms, which never import a step:
//!
//! - [`record`]: the artifact record, how input lines become records, and
//!   the error codes records carry;
//! - [`pipeline`]: the stream driver that runs a step over every record and
//!   keeps the record rules, plus what the CI host is told;
//! - [`oci`]: where images live (registries and OCI layouts), by digest:
//!   the `os-oci` crate, which knows nothing of records or flags;
//! - [`signing`] and [`kube`]: keys and signature formats; Kubernetes
//!   manifests and kubectl.
//!
//! [`http`] (in `os-oci` too) is the floor everything that talks HTTP
//! stands on: one retry policy, one loopback rule. `ARCHITECTURE.md` draws
//! the whole house.

pub mod cli;
pub mod kube;
pub mod pipeline;
pub mod record;
pub mod signing;
pub mod steps;

/// Where images live: the `os-oci` crate, which stands alone.
pub use os_oci as oci;
/// The HTTP floor (retry policy, loopback rule), from `os-oci`.
pub use os_oci::http;
