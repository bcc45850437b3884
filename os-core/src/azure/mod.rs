//! Signing with a key in Azure Key Vault or Managed HSM: the private key
//! never leaves the vault. Two REST calls of the Key Vault API (7.4) and the
//! standard Azure credentials are spoken here directly over `reqwest`:
//!
//! - `GET {vault}/keys/{name}[/{version}]`: the public key (a JWK) becomes
//!   SubjectPublicKeyInfo DER, and the key type picks the algorithm (EC
//!   P-256 → ES256, P-384 → ES384, RSA → RS256, what cosign uses);
//! - `POST {kid}/sign`: the vault signs a digest the client computed; EC
//!   signatures come back as raw `r‖s` and are turned into ASN.1 DER, the
//!   form cosign and the verifiers here expect.
//!
//! Credentials, for [`CredentialKind::Auto`] in this order (the first one
//! configured is used), or exactly the one named: environment (client
//! secret), workload identity (federated token file), managed identity
//! (`IDENTITY_ENDPOINT`/`IDENTITY_HEADER`, else the instance metadata
//! service), and the Azure CLI. Tokens are cached per resource until shortly
//! before they expire. Secrets, tokens and client assertions are never put
//! into an error or a log line; token endpoint messages are scrubbed of them.
//!
//! Why not the Azure SDK crates (`azure_identity` 1.0 /
//! `azure_security_keyvault_keys` 1.0 over `azure_core` 1.1, checked also at
//! their 1.1/1.2 betas):
//! - `azure_core`'s bearer token policy refuses every request that is not
//!   HTTPS ("authorized requests are not permitted for non-TLS protected
//!   endpoints"), and `azure_identity` refuses an authority host that is not
//!   HTTPS, so neither can talk to the plain-HTTP loopback stand-in the tests
//!   run against, and there is no switch for it;
//! - `azure_identity` 1.x has no environment credential and no default
//!   credential chain any more, so the `Auto` chain (and the environment
//!   variable handling) would be written here anyway;
//! - they declare Rust 1.88 (the workspace says 1.85), and with their default
//!   features add 42 crates to this workspace's lock file, among them
//!   `aws-lc-rs`/`aws-lc-sys` (a C build of minutes, the reason this
//!   workspace installs ring), quinn, flate2, uuid, async-lock and their own
//!   proc-macro crates, for two REST calls and four token requests.

use std::fmt;

pub mod arm;
mod credential;
mod registry_sign_in;
mod vault;

pub use credential::AzureCredential;
pub use registry_sign_in::RegistrySignIn;
pub use vault::{KeyVault, VaultKey, raw_ecdsa_to_der};

/// Which Azure credential signs requests to the vault ([`CredentialKind::help`]
/// says where each looks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CredentialKind {
    #[default]
    Auto,
    Environment,
    WorkloadIdentity,
    ManagedIdentity,
    AzureCli,
}

impl CredentialKind {
    /// In the order `Auto` tries them (after itself).
    pub const ALL: [CredentialKind; 5] = [
        CredentialKind::Auto,
        CredentialKind::Environment,
        CredentialKind::WorkloadIdentity,
        CredentialKind::ManagedIdentity,
        CredentialKind::AzureCli,
    ];

    /// The name `--azure-credential` takes.
    pub fn name(self) -> &'static str {
        match self {
            CredentialKind::Auto => "auto",
            CredentialKind::Environment => "environment",
            CredentialKind::WorkloadIdentity => "workload-identity",
            CredentialKind::ManagedIdentity => "managed-identity",
            CredentialKind::AzureCli => "azure-cli",
        }
    }

    /// Where it looks, for `--help`.
    pub fn help(self) -> &'static str {
        match self {
            CredentialKind::Auto => "The first configured of the others, in their order here",
            CredentialKind::Environment => "`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`",
            CredentialKind::WorkloadIdentity => {
                "`AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID`, `AZURE_TENANT_ID` (AKS, Azure DevOps \
                 workload identity federation)"
            }
            CredentialKind::ManagedIdentity => {
                "`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`, else the instance metadata service \
                 (`AZURE_CLIENT_ID` picks a user-assigned identity)"
            }
            CredentialKind::AzureCli => "`az account get-access-token`",
        }
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AzureError {
    #[error("invalid Azure Key Vault host {0:?}: expected a host name with an optional port")]
    BadVault(String),
    #[error("invalid {what} {value:?}: {detail}")]
    BadName {
        what: &'static str,
        value: String,
        detail: &'static str,
    },
    #[error("--azure-credential {kind} needs {}, which {} not set", .missing.join(", "), if .missing.len() == 1 { "is" } else { "are" })]
    MissingVariables {
        kind: CredentialKind,
        missing: Vec<&'static str>,
    },
    #[error("--azure-credential azure-cli: `az` was not found on PATH")]
    AzureCliNotFound,
    #[error("{name}: {detail}")]
    BadSetting { name: &'static str, detail: String },
    #[error(
        "no Azure credential found: looked for {looked_for}{tried}; configure one, or name one with --azure-credential"
    )]
    NoCredential { looked_for: String, tried: String },
    #[error("cannot get an Azure access token with the {credential} credential: {detail}")]
    Token { credential: String, detail: String },
    #[error("cannot reach Azure Key Vault {vault}: {detail}")]
    Unreachable { vault: String, detail: String },
    #[error(
        "{vault} refused {what} ({status}) to the {credential} credential: {detail}; the identity needs a role such as \"Key Vault Crypto User\" on the key, or choose another credential with --azure-credential"
    )]
    Unauthorized {
        vault: String,
        what: String,
        status: u16,
        credential: String,
        detail: String,
    },
    #[error("{what}: not found in {vault} (404): {detail}")]
    NotFound {
        vault: String,
        what: String,
        detail: String,
    },
    #[error("{vault} answered {status} for {what}: {detail}")]
    Status {
        vault: String,
        what: String,
        status: u16,
        detail: String,
    },
    #[error("{vault}: {detail}")]
    Protocol { vault: String, detail: String },
    #[error("{kid}: {detail}")]
    Unsupported { kid: String, detail: String },
    #[error("the vault returned a malformed signature: {0}")]
    BadSignature(String),
}
