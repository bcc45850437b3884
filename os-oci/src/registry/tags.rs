//! Tags: a repository's tag list (paged by `Link`), and the digest one tag
//! names.

use reqwest::{Method, StatusCode};

use super::manifests::header_digest;
use super::{Registry, RegistryError, header_str};
use crate::digest::Digest;
use crate::manifest;
use crate::reference::RegistryRef;

impl Registry {
    /// Every tag of a repository (`/tags/list`, following `Link` pages);
    /// `None` when the registry will not list them (then ask tag by tag).
    pub async fn tags(&self, repository: &RegistryRef) -> Result<Option<Vec<String>>, RegistryError> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut tags = Vec::new();
        let mut path = format!("/v2/{}/tags/list?n=1000", repository.repository);
        loop {
            let response = self.send(repository, "pull", Method::GET, &path, None).await?;
            if !response.status().is_success() {
                return Ok(None);
            }
            let next = header_str(response.headers(), "link").and_then(next_page);
            let body = response
                .bytes()
                .await
                .map_err(|e| self.unreachable(repository, &e))?;
            let Ok(page) = serde_json::from_slice::<Page>(&body) else {
                return Ok(None);
            };
            tags.extend(page.tags.unwrap_or_default());
            match next {
                // Registries answer with a path (`</v2/…?last=…>; rel="next"`).
                Some(next) if next.starts_with("/v2/") => path = next,
                Some(_) => return Ok(None),
                None => return Ok(Some(tags)),
            }
        }
    }

    /// The digest a tag points to, if the tag exists (one HEAD; a GET where
    /// the registry sends no digest header).
    pub async fn tag_digest(
        &self,
        reference: &RegistryRef,
        tag: &str,
    ) -> Result<Option<Digest>, RegistryError> {
        let tagged = reference.with_tag(tag);
        let path = format!("/v2/{}/manifests/{tag}", reference.repository);
        let response = self
            .send(&tagged, "pull", Method::HEAD, &path, Some(manifest::ACCEPT_ALL))
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = self.expect_ok(&tagged, response, "manifest").await?;
        match header_digest(&tagged, response.headers())? {
            Some(digest) => Ok(Some(digest)),
            None => Ok(self
                .fetch_manifest_if_any(&tagged)
                .await?
                .map(|(bytes, _)| Digest::of(&bytes))),
        }
    }
}

/// The target of a `Link: <…>; rel="next"` header.
pub(super) fn next_page(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_give_the_next_page() {
        assert_eq!(
            next_page(r#"</v2/app/tags/list?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/app/tags/list?last=b&n=2")
        );
        assert_eq!(next_page(r#"</other>; rel="prev""#), None);
    }
}
