//! Carrying what is attached to an image: cosign's `.sig`/`.att`/`.sbom`
//! tags and OCI 1.1 referrers, with a tag-fallback index (merged with the
//! target's own) where the target has no Referrers API.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;

use super::{Attachments, Copier, ImportError, SourceTags};
use crate::oci::digest::Digest;
use crate::oci::manifest;
use crate::oci::store::{Place, Stores};

/// cosign's attachment tags: signatures, attestations, SBOMs.
pub(super) const ATTACHMENT_SUFFIXES: [&str; 3] = [".sig", ".att", ".sbom"];

impl Copier<'_> {
    /// Copies cosign's attachment tags and OCI 1.1 referrers of `digest`,
    /// all at once; returns what was attached (name and manifest digest)
    /// and how the source offered referrers.
    pub(super) async fn copy_attachments(&self, digest: &Digest) -> Result<Attachments, ImportError> {
        let listed = self.source_tags.of(self.stores, &self.from).await?;
        let may_exist = |tag: &str| listed.as_ref().is_none_or(|tags| tags.contains(tag));
        let tags = ATTACHMENT_SUFFIXES
            .iter()
            .map(|suffix| format!("{}{suffix}", digest.tag_form()))
            .filter(|tag| may_exist(tag))
            .map(|tag| self.copy_attachment_tag(tag, listed.is_some()));
        let (tagged, referrers) = futures::try_join!(
            futures::future::try_join_all(tags),
            self.copy_referrers(digest, may_exist(&digest.tag_form())),
        )?;
        let mut attachments = Attachments::default();
        for (tag, attachment, written) in tagged.into_iter().flatten() {
            attachments.add(tag, attachment, written);
        }
        attachments.mechanism = referrers.mechanism;
        attachments.extend(referrers);
        Ok(attachments)
    }

    /// Copies one cosign attachment tag (`sha256-<hex>.sig`, …) unless the
    /// target's tag names the same manifest. Returns the tag, the manifest's
    /// digest and whether it was written; `None` when the source has no
    /// such tag. When the source's tags were listed (the tag exists), the
    /// target is asked at the same time as the source.
    pub(super) async fn copy_attachment_tag(
        &self,
        tag: String,
        listed: bool,
    ) -> Result<Option<(String, Digest, bool)>, ImportError> {
        let (stores, from, to) = (self.stores, &self.from, &self.to);
        let (source, there) = if listed {
            let (source, there) = futures::try_join!(from.tagged(stores, &tag), to.tag_digest(stores, &tag))?;
            (source, Some(there))
        } else {
            (from.tagged(stores, &tag).await?, None)
        };
        let Some(bytes) = source else {
            return Ok(None);
        };
        let attachment = Digest::of(&bytes);
        let there = match there {
            Some(there) => there,
            None => to.tag_digest(stores, &tag).await?,
        };
        // The target's tag already names it: it is there, with all it
        // references (a tag is only ever set after what it names).
        if there.as_ref() == Some(&attachment) {
            return Ok(Some((tag, attachment, false)));
        }
        self.copy_tree_as(&attachment, Some(bytes), Some(&tag)).await?;
        Ok(Some((tag, attachment, true)))
    }

    pub(super) async fn target_has_referrers_api(&self, digest: &Digest) -> Result<bool, ImportError> {
        Ok(match &self.to {
            Place::Registry(r) => self.stores.registry().has_referrers_api(r, digest).await?,
            Place::Layout(_) => false,
        })
    }

    /// Copies the OCI 1.1 referrers of `digest` and the tag-fallback index
    /// listing them — the source's, or one made from its Referrers API's
    /// answer for a target without the API — merged with the target's own.
    /// `fallback_may_exist` is false when the source's tag list lacks the
    /// `sha256-<hex>` tag.
    pub(super) async fn copy_referrers(
        &self,
        digest: &Digest,
        fallback_may_exist: bool,
    ) -> Result<Attachments, ImportError> {
        let (stores, from, to) = (self.stores, &self.from, &self.to);
        let fallback_tag = digest.tag_form();
        let api_absent = match from {
            Place::Registry(r) => stores.registry().lacks_referrers_api(&r.registry),
            Place::Layout(_) => true,
        };
        if api_absent && !fallback_may_exist {
            return Ok(Attachments::default());
        }
        // A source known to list referrers by its tag fallback: the target's
        // fallback tag is asked at the same time.
        let (listing, asked) = if api_absent {
            let (listing, there) = futures::try_join!(
                from.referrers(stores, digest),
                to.tag_digest(stores, &fallback_tag)
            )?;
            (listing, Some(there))
        } else {
            (from.referrers(stores, digest).await?, None)
        };
        // Referrers a source's Referrers API lists reach a target without
        // the API (a layout, an older registry) only through a tag-fallback
        // index: one is written there, as for a source that had one.
        let index = match listing.fallback {
            Some(index) => Some(index),
            None if !listing.entries.is_empty() && !self.target_has_referrers_api(digest).await? => {
                Some(manifest::referrers_index(&listing.entries))
            }
            None => None,
        };
        let target_index = match (&index, asked) {
            (Some(_), Some(there)) => there,
            (Some(_), None) => to.tag_digest(stores, &fallback_tag).await?,
            (None, _) => None,
        };
        // An equal tag-fallback index at the target lists referrers that are
        // all there (the index is written after its members).
        let index_there = index
            .as_ref()
            .is_some_and(|index| target_index == Some(Digest::of(index)));
        let referrers: Vec<Digest> = listing
            .entries
            .iter()
            .filter_map(manifest::descriptor_digest)
            .collect();
        // A target with no fallback index at all has none of these
        // referrers listed: they are copied without asking for each first
        // (pushing a manifest it has by chance is harmless; its blobs are
        // still asked for).
        let none_listed = index.is_some() && target_index.is_none();
        let written = futures::future::try_join_all(referrers.iter().map(|referrer| async move {
            Ok::<_, ImportError>(match (index_there, none_listed) {
                (true, _) => false,
                (false, true) => {
                    self.copy_tree_as(referrer, None, None).await?;
                    true
                }
                (false, false) => self.copy_tree(referrer, None).await?.is_some(),
            })
        }))
        .await?;
        let mut attachments = Attachments {
            mechanism: listing.mechanism,
            ..Attachments::default()
        };
        for (referrer, written) in referrers.into_iter().zip(written) {
            attachments.add(format!("referrer {referrer}"), referrer, written);
        }
        // Registries without the Referrers API (and layouts) find referrers
        // through the tag-fallback index: carry it, after its members.
        if !listing.entries.is_empty()
            && !index_there
            && let Some(index) = index
        {
            // Referrers attached at the target alone stay listed.
            let existing = match target_index {
                Some(_) => to.tagged(stores, &fallback_tag).await?,
                None => None,
            };
            let index = match existing {
                Some(existing) => merged_index(&index, &existing),
                None => index,
            };
            to.put_manifest(stores, &index, manifest::OCI_INDEX, Some(&fallback_tag))
                .await?;
        }
        Ok(attachments)
    }
}

impl SourceTags {
    pub(super) async fn of(
        &self,
        stores: &Stores,
        place: &Place,
    ) -> Result<Option<Arc<HashSet<String>>>, ImportError> {
        let Place::Registry(repository) = place else {
            return Ok(None);
        };
        let cell = self
            .repositories
            .lock()
            .expect("source tags poisoned")
            .entry(format!("{}/{}", repository.registry, repository.repository))
            .or_default()
            .clone();
        let listed = cell
            .get_or_try_init(|| async {
                let tags = place.tags(stores).await?;
                Ok::<_, ImportError>(tags.map(|tags| Arc::new(tags.into_iter().collect())))
            })
            .await?;
        Ok(listed.clone())
    }
}

impl Attachments {
    pub(super) fn add(&mut self, name: String, digest: Digest, written: bool) {
        if written {
            self.written.push((name.clone(), digest.clone()));
        }
        self.found.push((name, digest));
    }

    pub(super) fn extend(&mut self, other: Attachments) {
        self.found.extend(other.found);
        self.written.extend(other.written);
    }
}

/// The source's tag-fallback index plus the entries only the target's
/// lists (its own referrers); the source's bytes when there are none.
pub(super) fn merged_index(source: &[u8], target: &[u8]) -> Vec<u8> {
    let (Ok(mut merged), Ok(theirs)) = (
        serde_json::from_slice::<Value>(source),
        manifest::index_entries(target),
    ) else {
        return source.to_vec();
    };
    let ours: HashSet<Digest> = manifest::index_entries(source)
        .unwrap_or_default()
        .iter()
        .filter_map(manifest::descriptor_digest)
        .collect();
    let extra: Vec<Value> = theirs
        .into_iter()
        .filter(|entry| manifest::descriptor_digest(entry).is_some_and(|d| !ours.contains(&d)))
        .collect();
    match merged.get_mut("manifests").and_then(Value::as_array_mut) {
        Some(entries) if !extra.is_empty() => entries.extend(extra),
        _ => return source.to_vec(),
    }
    serde_json::to_vec(&merged).expect("a JSON value serialises")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_target_fallback_index_keeps_its_own_referrers() {
        let d = |n: u8| format!("sha256:{}", format!("{n:02x}").repeat(32));
        let index = |digests: &[String]| {
            let entries: Vec<_> = digests.iter().map(|d| serde_json::json!({"digest": d})).collect();
            serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": entries})).unwrap()
        };
        let source = index(&[d(1), d(2)]);
        let merged = super::merged_index(&source, &index(&[d(2), d(3)]));
        let listed: Vec<_> = crate::oci::manifest::index_entries(&merged)
            .unwrap()
            .iter()
            .map(|e| e["digest"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(listed, [d(1), d(2), d(3)]);
        assert_eq!(
            super::merged_index(&source, &index(&[d(1)])),
            source,
            "nothing to add"
        );
    }
}
