//! Kubernetes: manifests rewritten to pin images by digest, the kubectl
//! that applies them and waits for rollouts, and the child-process runner
//! kubectl and git share.

pub mod kubectl;
pub mod manifest;
pub mod process;
