//! Where images live, by digest: references, digests and manifests, the
//! registry client and OCI image layouts, and one face over both
//! ([`store::Place`]). Nothing here knows about records or flags: this is
//! the part another team can take on its own.

pub mod credentials;
pub mod digest;
pub mod layout;
pub mod manifest;
pub mod reference;
pub mod registry;
pub mod store;
