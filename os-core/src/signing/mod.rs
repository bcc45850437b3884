//! Keys and signature formats: cosign keys (file, `env://`, `azurekms://`
//! through [`crate::azure`]), the simple-signing payload cosign signs, and Sigstore
//! bundles.

pub mod attestation;
pub mod bundle;
pub mod key;
pub mod simple_signing;
pub mod vuln;
