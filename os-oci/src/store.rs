//! One face over the two places images live: registries and OCI layouts.
//! Tools ask a [`Stores`] about an [`ImageRef`] and never care which kind
//! it is.

use std::sync::Arc;

use bytes::Bytes;

use crate::digest::Digest;
use crate::layout::{Layout, LayoutError, off_thread};
use crate::manifest;
use crate::reference::ImageRef;
use crate::reference::RegistryRef;
use crate::registry::{Referrers, Registry, RegistryError, Resolved};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
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

/// One repository or one OCI layout: where manifests, blobs, tags and
/// referrers of an image are read and written. Everything read by digest is
/// checked against it.
#[derive(Clone)]
pub enum Place {
    Registry(RegistryRef),
    Layout(Arc<Layout>),
}

impl Place {
    /// The repository or layout an image reference names (its tag or
    /// digest aside).
    pub fn of(image: &ImageRef) -> Result<Place, StoreError> {
        match image {
            ImageRef::Registry(r) => Ok(Place::Registry(r.with(None))),
            ImageRef::Layout(l) => Ok(Place::Layout(Arc::new(Layout::open(&l.dir)?))),
        }
    }

    pub async fn manifest(&self, stores: &Stores, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        match self {
            Place::Registry(r) => Ok(stores
                .registry()
                .fetch_manifest(&r.with_digest(digest.clone()), Some(digest))
                .await?
                .0
                .to_vec()),
            Place::Layout(_) => self.blob(stores, digest).await,
        }
    }

    /// A small blob (a config, a signature payload, a bundle), whole.
    pub async fn blob(&self, stores: &Stores, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        match self {
            Place::Registry(r) => Ok(stores.registry().fetch_blob(r, digest).await?.to_vec()),
            Place::Layout(layout) => {
                let (layout, digest) = (layout.clone(), digest.clone());
                Ok(off_thread(move || layout.read_blob(&digest)).await?)
            }
        }
    }

    /// The manifest a tag names, if the tag exists.
    pub async fn tagged(&self, stores: &Stores, tag: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Place::Registry(r) => Ok(stores
                .registry()
                .fetch_manifest_if_any(&r.with_tag(tag))
                .await?
                .map(|(bytes, _)| bytes.to_vec())),
            Place::Layout(layout) => {
                let (layout, tag) = (layout.clone(), tag.to_string());
                Ok(off_thread(move || layout.tagged_manifest(&tag)).await?)
            }
        }
    }

    pub async fn has_manifest(&self, stores: &Stores, digest: &Digest) -> Result<bool, StoreError> {
        match self {
            Place::Registry(r) => {
                let path = format!("/v2/{}/manifests/{digest}", r.repository);
                let response = stores
                    .registry()
                    .send(
                        r,
                        "pull",
                        reqwest::Method::HEAD,
                        &path,
                        Some(manifest::ACCEPT_ALL),
                    )
                    .await?;
                Ok(response.status().is_success())
            }
            Place::Layout(layout) => Ok(layout.has_blob(digest)),
        }
    }

    pub async fn has_blob(&self, stores: &Stores, digest: &Digest) -> Result<bool, StoreError> {
        match self {
            Place::Registry(r) => Ok(stores.registry().blob_exists(r, digest).await?),
            Place::Layout(layout) => Ok(layout.has_blob(digest)),
        }
    }

    /// Writes manifest bytes (by digest, and under `tag` when given; a
    /// layout lists only tagged manifests in its index).
    pub async fn put_manifest(
        &self,
        stores: &Stores,
        bytes: &[u8],
        media_type: &str,
        tag: Option<&str>,
    ) -> Result<(), StoreError> {
        match self {
            Place::Registry(r) => {
                stores
                    .registry()
                    .push_manifest(r, tag, media_type, Bytes::copy_from_slice(bytes))
                    .await?;
            }
            Place::Layout(layout) => {
                let (layout, bytes, media_type, tag) = (
                    layout.clone(),
                    bytes.to_vec(),
                    media_type.to_string(),
                    tag.map(str::to_string),
                );
                off_thread(move || {
                    let digest = Digest::of(&bytes);
                    layout.write_blob(&digest, bytes.as_slice())?;
                    if tag.is_some() {
                        layout.add_manifest(&media_type, &digest, bytes.len() as u64, tag.as_deref())?;
                    }
                    Ok(())
                })
                .await?;
            }
        }
        Ok(())
    }

    /// OCI 1.1 referrers of `digest`: the Referrers API or its tag fallback
    /// in a registry, the tag fallback in a layout; which answered; and the
    /// fallback index's bytes when it did.
    pub async fn referrers(&self, stores: &Stores, digest: &Digest) -> Result<Listing, StoreError> {
        match self {
            Place::Registry(r) => {
                let (entries, mechanism, fallback) =
                    stores.registry().referrers_and_fallback(r, digest).await?;
                Ok(Listing {
                    entries,
                    mechanism,
                    fallback: fallback.map(|bytes| bytes.to_vec()),
                })
            }
            Place::Layout(_) => Ok(match self.tagged(stores, &digest.tag_form()).await? {
                Some(index) => Listing {
                    entries: manifest::index_entries(&index).unwrap_or_default(),
                    mechanism: Referrers::TagFallback,
                    fallback: Some(index),
                },
                None => Listing {
                    entries: Vec::new(),
                    mechanism: Referrers::None,
                    fallback: None,
                },
            }),
        }
    }

    /// The digest `tag` names here, if the tag exists.
    pub async fn tag_digest(&self, stores: &Stores, tag: &str) -> Result<Option<Digest>, StoreError> {
        match self {
            Place::Registry(r) => Ok(stores.registry().tag_digest(r, tag).await?),
            Place::Layout(_) => Ok(self.tagged(stores, tag).await?.map(|bytes| Digest::of(&bytes))),
        }
    }

    /// Whether `tag` already names `digest` here.
    pub async fn tag_points_to(
        &self,
        stores: &Stores,
        tag: &str,
        digest: &Digest,
    ) -> Result<bool, StoreError> {
        Ok(self.tag_digest(stores, tag).await?.as_ref() == Some(digest))
    }

    /// Every tag of a registry repository, when the registry lists them
    /// (`None` for a layout, whose tags are read locally one by one anyway).
    pub async fn tags(&self, stores: &Stores) -> Result<Option<Vec<String>>, StoreError> {
        match self {
            Place::Registry(r) => Ok(stores.registry().tags(r).await?),
            Place::Layout(_) => Ok(None),
        }
    }
}

/// The referrers of a digest, as a place lists them.
pub struct Listing {
    pub entries: Vec<serde_json::Value>,
    pub mechanism: Referrers,
    /// The `sha256-<hex>` tag-fallback index, when that is what answered.
    pub fallback: Option<Vec<u8>>,
}
