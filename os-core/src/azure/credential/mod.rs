//! Azure credentials: where a token may come from (environment, workload
//! identity, managed identity, the Azure CLI), read from the environment
//! once, tried in order for `Auto`, and tokens cached per resource. Secrets,
//! tokens and client assertions never reach an error or a log line.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::{AzureError, CredentialKind};
use crate::http::{USER_AGENT, describe};

mod fetch;
mod sources;

#[cfg(test)]
pub(super) use fetch::redact;
pub(super) use fetch::{clip, first_line};
use sources::{Source, resolve};

/// Tokens are renewed this long before they expire (at most half their life).
pub(super) const TOKEN_RENEW_MARGIN: Duration = Duration::from_secs(300);

pub(super) struct Token {
    value: Zeroizing<String>,
    renew_at: Instant,
}

#[derive(Default)]
pub(super) struct TokenState {
    /// The source that gave the first token; later tokens come from it too.
    chosen: Option<usize>,
    /// By resource (`https://vault.azure.net`, `https://managedhsm.azure.net`).
    tokens: HashMap<String, Token>,
}

/// A bearer token and the name of the credential that got it.
pub(super) struct Authorization {
    pub(super) token: Zeroizing<String>,
    pub(super) credential: &'static str,
}

/// Why a source gave no token.
pub(super) enum Miss {
    /// Not there (`Auto` mode's metadata service probe): try the next one.
    Unavailable(String),
    Failed(AzureError),
}

/// An Azure credential: the sources it may take tokens from (read from the
/// environment once), one HTTP client, and tokens cached per resource (Key
/// Vault, Managed HSM, Resource Manager) until shortly before they expire.
pub struct AzureCredential {
    http: reqwest::Client,
    kind: CredentialKind,
    sources: Vec<Source>,
    /// For the `Auto` error when nothing works: what was looked for.
    looked_for: String,
    state: tokio::sync::Mutex<TokenState>,
}

impl fmt::Debug for AzureCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sources: Vec<&str> = self.sources.iter().map(Source::label).collect();
        f.debug_struct("AzureCredential")
            .field("kind", &self.kind)
            .field("sources", &sources)
            .finish_non_exhaustive()
    }
}

impl AzureCredential {
    /// A credential from `env` (a variable's value by name), read once,
    /// here. `PATH` is looked up through `env` too, to find `az`. Empty
    /// values count as unset.
    pub fn with_env(
        kind: CredentialKind,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<AzureCredential, AzureError> {
        let var = |name: &str| env(name).filter(|value| !value.trim().is_empty());
        let (sources, looked_for) = resolve(kind, &var)?;
        // reqwest is built without a default rustls provider; install ring
        // once per process (as the registry client does).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| AzureError::Unreachable {
                vault: "(client setup)".into(),
                detail: describe(&e),
            })?;
        Ok(AzureCredential {
            http,
            kind,
            sources,
            looked_for,
            state: tokio::sync::Mutex::default(),
        })
    }

    /// The kind this credential was built for.
    pub fn kind(&self) -> CredentialKind {
        self.kind
    }

    /// The HTTP client its tokens are fetched with, for the requests that
    /// carry them (one connection pool).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A token for `resource`, from the cache or the credential.
    pub(super) async fn token(&self, resource: &str) -> Result<Authorization, AzureError> {
        let mut state = self.state.lock().await;
        if let (Some(token), Some(chosen)) = (state.tokens.get(resource), state.chosen)
            && token.renew_at > Instant::now()
        {
            return Ok(Authorization {
                token: token.value.clone(),
                credential: self.sources[chosen].label(),
            });
        }
        let order: Vec<usize> = match state.chosen {
            Some(chosen) => vec![chosen],
            None => (0..self.sources.len()).collect(),
        };
        let mut tried = Vec::new();
        for index in order {
            let source = &self.sources[index];
            match self.fetch(source, resource).await {
                Ok((value, lifetime)) => {
                    tracing::debug!("Azure access token for {resource} from {}", source.label());
                    let margin = TOKEN_RENEW_MARGIN.min(lifetime / 2);
                    state.chosen = Some(index);
                    state.tokens.insert(
                        resource.to_string(),
                        Token {
                            value: value.clone(),
                            renew_at: Instant::now() + lifetime - margin,
                        },
                    );
                    return Ok(Authorization {
                        token: value,
                        credential: source.label(),
                    });
                }
                Err(Miss::Unavailable(reason)) => {
                    tracing::debug!("{}: {reason}", source.label());
                    tried.push(format!("{}: {reason}", source.label()));
                }
                Err(Miss::Failed(error)) => return Err(error),
            }
        }
        Err(AzureError::NoCredential {
            looked_for: self.looked_for.clone(),
            tried: tried.iter().map(|t| format!("; {t}")).collect(),
        })
    }
}

#[cfg(test)]
mod tests {}
