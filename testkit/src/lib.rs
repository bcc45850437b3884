//! End-to-end test support: real registries (CNCF distribution, started as
//! `docker-registry serve`) and deterministic OCI test images built without the
//! project's own code.
//!
//! A dev-only crate (`publish = false`): the end-to-end suite in `tests/it`
//! imports it as `use os_testkit as support;`, and `scripts/bench` drives
//! the same registries and images through its `bench-env` binary.
//!
//! - [`registry::TestRegistry`]: plain HTTP, HTTPS + htpasswd basic auth, or plain
//!   HTTP + token auth backed by the in-process [`token_server::TokenServer`].
//! - [`fault_proxy::FaultProxy`]: a proxy in front of a registry that injects
//!   error statuses, connection resets and corrupt bytes on a schedule.
//! - [`images`]: hand-written OCI image layouts (`single_arch`, `multi_arch`) and
//!   `push` (with skopeo) into a `TestRegistry`; [`push`]: the same by plain
//!   HTTP (as curl would), under many tags or as variants one annotation apart.
//! - [`arm::ArmStandIn`]: Azure Resource Manager (and its Entra token
//!   endpoint) fronting `TestRegistry`s as Azure Container Registries:
//!   `Registries_List`/`Get` and `Registries_ImportImage`, a long-running
//!   operation that copies server-side and drops every attachment, as ACR's
//!   import does; pinned by Microsoft's Python SDK (`tests/fixtures/azure_sdk`).

pub mod arm;
pub mod bins;
pub mod cosign;
pub mod fault_proxy;
pub mod form;
pub mod images;
pub mod keyvault;
pub mod push;
pub mod registry;
pub mod schema;
pub mod stub;
pub mod token_server;
