//! One face over the two places images live: registries and OCI layouts.
//! Tools ask a [`Stores`] about an [`ImageRef`] and never care which kind
//! it is.

use crate::digest::Digest;
use crate::layout::{Layout, LayoutError, off_thread};
use crate::record::Record;
use crate::reference::ImageRef;
use crate::reference::RegistryRef;
use crate::registry::{Registry, RegistryError, Resolved};
use crate::stream::Origin;

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
                let resolved =
                    off_thread(move || Layout::open(&l.dir)?.resolve(l.tag.as_deref(), l.digest.as_ref()))
                        .await?;
                Ok(resolved)
            }
        }
    }
}

/// The repository and digest a record names, for steps that need both.
pub fn located(record: &Record, origin: Origin, step: &str) -> Result<(RegistryRef, Digest), Record> {
    let fail = |code: &str, message: String| {
        let mut failed = record.clone();
        failed.fail(step, code, format!("{origin}: {message}"));
        failed
    };
    let Some(image) = record.image() else {
        return Err(fail("missing-field", "record has no \"image\"".into()));
    };
    let digest = match record.digest() {
        Ok(Some(digest)) => digest,
        _ => {
            return Err(fail(
                "missing-field",
                "record has no \"digest\": run os-digest first".into(),
            ));
        }
    };
    match image.parse::<ImageRef>() {
        Ok(ImageRef::Registry(repository)) if repository.tag.is_none() && repository.digest.is_none() => {
            Ok((repository, digest))
        }
        Ok(ImageRef::Registry(_)) => Err(fail(
            "bad-reference",
            format!("field \"image\" must name a repository without tag or digest: {image:?}"),
        )),
        Ok(ImageRef::Layout(_)) => Err(fail(
            "unsupported",
            format!("{image} is an OCI layout: signatures live in registries; import it first"),
        )),
        Err(error) => Err(fail("bad-reference", format!("field \"image\": {error}"))),
    }
}
