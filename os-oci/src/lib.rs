//! `os-oci`: where images live, by digest. References and digests,
//! manifests and indexes, the registry client (OCI distribution API, auth,
//! retries, referrers) and OCI image layouts, and one face over both
//! ([`store::Place`]). Everything fetched by digest is hashed before it is
//! trusted.
//!
//! It knows nothing of the OneStream records or command lines: it is the
//! part another team can take for its own tools. [`http`] is the floor it
//! stands on, shared with the other HTTP clients of the workspace (one
//! retry policy, one loopback rule).

pub mod credentials;
pub mod digest;
pub mod http;
pub mod layout;
pub mod manifest;
pub mod reference;
pub mod registry;
pub mod store;
