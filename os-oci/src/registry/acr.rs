//! Signing in to Azure Container Registry with an Entra ID token, without
//! `az acr login` or a credential helper. ACR's token service takes an Entra
//! access token at `POST /oauth2/exchange` (`grant_type=access_token`) and
//! answers an ACR refresh token, which then buys access tokens per scope at
//! `/oauth2/token` like any identity token.
//!
//! Where the Entra token comes from is not this crate's business: the
//! caller plugs in an [`EntraTokens`] (os-core's Azure credential chain).

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::{Registry, RegistryError, error_detail};
use crate::http::{describe, is_loopback};
use crate::reference::RegistryRef;

/// An Entra ID access token for ACR, and the tenant it is from when known.
pub struct EntraToken {
    pub access_token: String,
    pub tenant: Option<String>,
}

/// A source of Entra ID access tokens for registries.
pub trait EntraTokens: Send + Sync {
    /// A token (from a cache or the credential chain); the error is shown
    /// to the user as is, so it must hold no secret.
    fn token(&self) -> BoxFuture<'_, Result<EntraToken, String>>;
}

/// [`EntraTokens`] in [`super::RegistryOptions`] (which is `Debug`).
#[derive(Clone)]
pub struct EntraSignIn(pub Arc<dyn EntraTokens>);

impl fmt::Debug for EntraSignIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EntraSignIn")
    }
}

/// ACR's token endpoint path, which its Bearer challenge names as realm.
const TOKEN_PATH: &str = "/oauth2/token";

/// The exchange endpoint for `realm`, when `realm` is ACR's token endpoint
/// on the registry's own host: an Entra token is only ever sent to the
/// registry it is for (over TLS; plain HTTP only between loopback hosts, as
/// the tests' stand-ins are).
pub(super) fn exchange_url(registry: &str, realm: &str) -> Option<String> {
    let url = reqwest::Url::parse(realm).ok()?;
    if url.path() != TOKEN_PATH {
        return None;
    }
    let host = url.host_str()?;
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    let own_host = authority.eq_ignore_ascii_case(registry) || host.eq_ignore_ascii_case(registry);
    let allowed = match url.scheme() {
        "https" => own_host,
        "http" => is_loopback(&authority) && is_loopback(registry),
        _ => false,
    };
    allowed.then(|| format!("{}://{authority}/oauth2/exchange", url.scheme()))
}

impl Registry {
    /// An ACR refresh token for `reference`'s registry, traded for an Entra
    /// token at `exchange`.
    pub(super) async fn exchange_entra_token(
        &self,
        entra: &EntraSignIn,
        reference: &RegistryRef,
        exchange: &str,
        service: Option<&str>,
    ) -> Result<String, RegistryError> {
        let refused = |detail: String| RegistryError::Unauthorized {
            registry: reference.registry.clone(),
            repository: reference.repository.clone(),
            status: 401,
            detail,
        };
        let token = entra
            .0
            .token()
            .await
            .map_err(|e| refused(format!("signing in with Entra ID: {e}")))?;
        let service = service.unwrap_or(&reference.registry);
        let mut form = vec![
            ("grant_type", "access_token"),
            ("service", service),
            ("access_token", token.access_token.as_str()),
        ];
        if let Some(tenant) = &token.tenant {
            form.push(("tenant", tenant));
        }
        let response =
            self.http
                .post(exchange)
                .form(&form)
                .send()
                .await
                .map_err(|e| RegistryError::Unreachable {
                    registry: reference.registry.clone(),
                    detail: format!("ACR token exchange: {}", describe(&e)),
                })?;
        let status = response.status();
        if !status.is_success() {
            let detail = error_detail(response).await;
            return Err(refused(format!(
                "ACR refused the Entra ID token ({status}: {detail}); the identity needs AcrPull \
                 (AcrPush to write) on the registry"
            )));
        }
        #[derive(serde::Deserialize)]
        struct Exchanged {
            refresh_token: Option<String>,
        }
        let body: Exchanged = response.json().await.map_err(|e| RegistryError::Protocol {
            registry: reference.registry.clone(),
            detail: format!("ACR token exchange answered something else: {}", describe(&e)),
        })?;
        body.refresh_token.ok_or_else(|| RegistryError::Protocol {
            registry: reference.registry.clone(),
            detail: "ACR token exchange answered without a refresh_token".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entra_tokens_go_only_to_the_registrys_own_token_service() {
        assert_eq!(
            exchange_url("prod.azurecr.io", "https://prod.azurecr.io/oauth2/token").as_deref(),
            Some("https://prod.azurecr.io/oauth2/exchange")
        );
        assert_eq!(
            exchange_url("127.0.0.1:5000", "http://127.0.0.1:6000/oauth2/token").as_deref(),
            Some("http://127.0.0.1:6000/oauth2/exchange")
        );
        for (registry, realm) in [
            ("prod.azurecr.io", "https://evil.example.com/oauth2/token"),
            ("prod.azurecr.io", "http://prod.azurecr.io/oauth2/token"),
            ("prod.azurecr.io", "https://prod.azurecr.io/token"),
            ("ghcr.io", "https://ghcr.io/token"),
            ("10.0.0.5:5000", "http://10.0.0.5:5000/oauth2/token"),
        ] {
            assert_eq!(exchange_url(registry, realm), None, "{registry} {realm}");
        }
    }
}
