//! The Azure credential chain as the registry client's Entra sign-in
//! (`os_oci::registry::EntraTokens`): every tool reaches an Azure Container
//! Registry with only `AZURE_*` settings, no `az acr login`.

use futures::future::BoxFuture;
use tokio::sync::OnceCell;

use super::{AzureCredential, CredentialKind};
use crate::oci::registry::{EntraToken, EntraTokens};

/// ACR's token exchange takes Resource Manager tokens (what `az acr login`
/// sends).
const ACR_EXCHANGE_RESOURCE: &str = "https://management.azure.com";

/// Entra tokens for registries, from the credential `--azure-credential`
/// names. The credential is read from the environment on first use: a run
/// that never meets an ACR never looks.
pub struct RegistrySignIn {
    kind: CredentialKind,
    credential: OnceCell<Result<AzureCredential, String>>,
}

impl RegistrySignIn {
    pub fn new(kind: CredentialKind) -> RegistrySignIn {
        RegistrySignIn {
            kind,
            credential: OnceCell::new(),
        }
    }

    async fn fetch(&self) -> Result<EntraToken, String> {
        let credential = self
            .credential
            .get_or_init(|| async {
                AzureCredential::with_env(self.kind, |name| std::env::var(name).ok())
                    .map_err(|e| e.to_string())
            })
            .await
            .as_ref()
            .map_err(Clone::clone)?;
        let authorization = credential
            .token(ACR_EXCHANGE_RESOURCE)
            .await
            .map_err(|e| e.to_string())?;
        Ok(EntraToken {
            access_token: authorization.token.to_string(),
            tenant: std::env::var("AZURE_TENANT_ID").ok().filter(|t| !t.is_empty()),
        })
    }
}

impl EntraTokens for RegistrySignIn {
    fn token(&self) -> BoxFuture<'_, Result<EntraToken, String>> {
        Box::pin(self.fetch())
    }
}
