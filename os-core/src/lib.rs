//! `os-core`: the library behind the OneStream promotion tools.
//!
//! Each `os-*` binary parses its flags and calls in here; anything two tools
//! need lives here once: the artifact [`record`] and the [`stream`] driver
//! that keeps its rules, image [`reference`]s and [`digest`]s, the two
//! [`store`]s ([`registry`] with its [`credentials`], and OCI [`layout`]s),
//! and the shared command-line plumbing in [`cli`].

pub mod azure;
pub mod bundle;
pub mod capture;
pub mod ci_host;
pub mod cli;
pub mod credentials;
pub mod deploy;
pub mod digest;
pub mod gitops;
pub mod import;
pub mod key;
pub mod kube_manifest;
pub mod kubectl;
pub mod layout;
pub mod manifest;
pub mod process;
pub mod progress;
pub mod record;
pub mod reference;
pub mod registry;
pub mod sign;
pub mod signature;
pub mod source;
pub mod store;
pub mod stream;
pub mod verify;
