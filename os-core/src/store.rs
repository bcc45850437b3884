//! One face over the two places images live: registries and OCI layouts.
//! Tools ask a [`Stores`] about an [`ImageRef`] and never care which kind
//! it is.

use crate::layout::{Layout, LayoutError};
use crate::reference::ImageRef;
use crate::registry::{Registry, RegistryError, Resolved};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

impl StoreError {
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Registry(e) => e.code(),
            StoreError::Layout(e) => e.code(),
        }
    }
}

pub struct Stores {
    registry: Registry,
}

impl Stores {
    pub fn new(registry: Registry) -> Stores {
        Stores { registry }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The manifest a reference names, checked against its digest.
    pub async fn resolve(&self, reference: &ImageRef) -> Result<Resolved, StoreError> {
        match reference {
            ImageRef::Registry(r) => Ok(self.registry.resolve(r).await?),
            ImageRef::Layout(l) => {
                let l = l.clone();
                // Layout reads are blocking file I/O (and hash whole
                // manifests): keep them off the async workers.
                let resolved = tokio::task::spawn_blocking(move || {
                    Layout::open(&l.dir)?.resolve(l.tag.as_deref(), l.digest.as_ref())
                })
                .await
                .expect("layout resolve panicked")?;
                Ok(resolved)
            }
        }
    }
}
