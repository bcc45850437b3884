//! The five steps, one module each: what `os-digest`, `os-sign`,
//! `os-import`, `os-verify` and `os-deploy` do to a record (and
//! `os-sign attest`'s, beside signing).

pub mod attest;
pub mod deploy;
pub mod digest;
pub mod import;
pub mod sign;
pub mod verify;
