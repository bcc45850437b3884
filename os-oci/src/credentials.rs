//! Registry credentials: explicit ones from flags or the environment, else
//! the user's container auth file (`REGISTRY_AUTH_FILE`, then
//! `$DOCKER_CONFIG/config.json`, then `~/.docker/config.json`) with its
//! `auths`, `credHelpers` and `credsStore` (real `docker-credential-*`
//! helpers, run through the `docker_credential` crate).
//!
//! Secrets never appear in `Debug` output, logs or error messages.

use std::fmt;
use std::path::PathBuf;

use docker_credential::{CredentialRetrievalError, DockerCredential};

/// A secret for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken` in config.json, or a helper
    /// answering username `<token>`), traded at the token endpoint.
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => {
                write!(f, "Basic {{ username: {username:?}, password: <redacted> }}")
            }
            Credential::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The helper's own output is left out on purpose: helpers have been
    /// known to echo secrets in their failure output.
    #[error("credential helper docker-credential-{helper} failed for {registry}")]
    HelperFailed { helper: String, registry: String },
    #[error("auth file {path} could not be read as a docker/containers auth file")]
    UnreadableFile { path: PathBuf },
}

/// The auth file in force: what podman, skopeo and docker would read.
pub fn auth_file() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("REGISTRY_AUTH_FILE") {
        return Some(PathBuf::from(path));
    }
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker")))?;
    Some(dir.join("config.json"))
}

/// The key Docker Hub's credentials are stored under.
fn config_key(registry: &str) -> &str {
    if registry == crate::reference::DOCKER_HUB {
        "https://index.docker.io/v1/"
    } else {
        registry
    }
}

/// Looks up the credential for `registry` (host[:port]) in the auth file.
/// No file, or no entry for the registry, is `Ok(None)`: anonymous access.
/// Blocking: it may run a helper process.
pub fn lookup(registry: &str) -> Result<Option<Credential>, CredentialError> {
    let Some(path) = auth_file() else {
        return Ok(None);
    };
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(_) => return Err(CredentialError::UnreadableFile { path }),
    };
    let key = config_key(registry);
    match docker_credential::get_credential_from_reader(std::io::BufReader::new(file), key) {
        Ok(DockerCredential::UsernamePassword(username, password)) => {
            Ok(Some(Credential::Basic { username, password }))
        }
        Ok(DockerCredential::IdentityToken(token)) => Ok(Some(Credential::IdentityToken(token))),
        Err(CredentialRetrievalError::NoCredentialConfigured) => Ok(None),
        // The helper protocol's way of saying "no entry": anonymous, as docker does.
        Err(CredentialRetrievalError::HelperFailure { stdout, .. })
            if stdout.contains("credentials not found") =>
        {
            Ok(None)
        }
        Err(CredentialRetrievalError::HelperFailure { helper, .. }) => Err(CredentialError::HelperFailed {
            helper: helper.trim_start_matches("docker-credential-").to_string(),
            registry: registry.to_string(),
        }),
        Err(
            CredentialRetrievalError::HelperCommunicationError
            | CredentialRetrievalError::MalformedHelperResponse,
        ) => Err(CredentialError::HelperFailed {
            helper: "(configured helper)".to_string(),
            registry: registry.to_string(),
        }),
        Err(_) => Err(CredentialError::UnreadableFile { path }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        let basic = Credential::Basic {
            username: "ci".into(),
            password: "hunter2".into(),
        };
        let token = Credential::IdentityToken("refresh-secret".into());
        let shown = format!("{basic:?} {token:?}");
        assert!(shown.contains("ci"));
        assert!(!shown.contains("hunter2") && !shown.contains("refresh-secret"));
    }
}
