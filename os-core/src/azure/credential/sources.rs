//! Where a token may come from: each credential kind's variables read from
//! the environment once, into the sources `Auto` tries in order.

use std::path::PathBuf;

use zeroize::Zeroizing;

use super::{AzureError, CredentialKind};
use crate::http::is_loopback;

pub(super) const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";

pub(super) const IMDS_AUTHORITY: &str = "http://169.254.169.254";

pub(super) const IMDS_PATH: &str = "/metadata/identity/oauth2/token";

pub(super) const ENVIRONMENT_VARS: [&str; 3] = ["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"];

pub(super) const WORKLOAD_VARS: [&str; 3] =
    ["AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_ID", "AZURE_TENANT_ID"];

pub(super) const APP_SERVICE_VARS: [&str; 2] = ["IDENTITY_ENDPOINT", "IDENTITY_HEADER"];

/// One way of getting a token, with what it needs read from the
/// environment up front.
pub(super) enum Source {
    ClientSecret {
        authority: String,
        tenant: String,
        client_id: String,
        secret: Zeroizing<String>,
    },
    Workload {
        authority: String,
        tenant: String,
        client_id: String,
        token_file: PathBuf,
    },
    AppService {
        endpoint: String,
        header: Zeroizing<String>,
        client_id: Option<String>,
    },
    Imds {
        url: String,
        client_id: Option<String>,
        /// `Auto` mode: probe first, and count "nothing there" as this
        /// source being unavailable rather than as an error.
        probe: bool,
    },
    AzureCli {
        az: PathBuf,
    },
}

impl Source {
    /// How errors and logs name this source (never with a value in it).
    pub(super) fn label(&self) -> &'static str {
        match self {
            Source::ClientSecret { .. } => "environment (AZURE_CLIENT_SECRET)",
            Source::Workload { .. } => "workload identity (AZURE_FEDERATED_TOKEN_FILE)",
            Source::AppService { .. } => "managed identity (IDENTITY_ENDPOINT)",
            Source::Imds { .. } => "managed identity (instance metadata service)",
            Source::AzureCli { .. } => "Azure CLI (az)",
        }
    }
}

/// The sources a credential kind uses, in order, and (for `Auto`) the
/// description of what was looked for.
pub(super) fn resolve(
    kind: CredentialKind,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<(Vec<Source>, String), AzureError> {
    let take = |names: &[&'static str]| -> Result<Vec<String>, Vec<&'static str>> {
        let values: Vec<Option<String>> = names.iter().map(|name| var(name)).collect();
        let missing: Vec<&'static str> = names
            .iter()
            .zip(&values)
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| *name)
            .collect();
        if missing.is_empty() {
            Ok(values.into_iter().flatten().collect())
        } else {
            Err(missing)
        }
    };
    let environment = |values: Vec<String>| -> Result<Source, AzureError> {
        let [tenant, client_id, secret] = <[String; 3]>::try_from(values).expect("three values");
        Ok(Source::ClientSecret {
            authority: authority_host(var("AZURE_AUTHORITY_HOST"))?,
            tenant: tenant_id(tenant)?,
            client_id,
            secret: Zeroizing::new(secret),
        })
    };
    let workload = |values: Vec<String>| -> Result<Source, AzureError> {
        let [file, client_id, tenant] = <[String; 3]>::try_from(values).expect("three values");
        Ok(Source::Workload {
            authority: authority_host(var("AZURE_AUTHORITY_HOST"))?,
            tenant: tenant_id(tenant)?,
            client_id,
            token_file: PathBuf::from(file),
        })
    };
    let app_service = |values: Vec<String>| -> Result<Source, AzureError> {
        let [endpoint, header] = <[String; 2]>::try_from(values).expect("two values");
        let parsed = url::Url::parse(&endpoint).map_err(|e| AzureError::BadSetting {
            name: "IDENTITY_ENDPOINT",
            detail: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(AzureError::BadSetting {
                name: "IDENTITY_ENDPOINT",
                detail: "not an http(s) URL".into(),
            });
        }
        Ok(Source::AppService {
            endpoint,
            header: Zeroizing::new(header),
            client_id: var("AZURE_CLIENT_ID"),
        })
    };
    let imds = |probe: bool| Source::Imds {
        url: format!(
            "{}{IMDS_PATH}",
            var("AZURE_POD_IDENTITY_AUTHORITY_HOST")
                .as_deref()
                .unwrap_or(IMDS_AUTHORITY)
                .trim_end_matches('/')
        ),
        client_id: var("AZURE_CLIENT_ID"),
        probe,
    };
    let missing = |missing: Vec<&'static str>| AzureError::MissingVariables { kind, missing };
    let sources = match kind {
        CredentialKind::Environment => vec![environment(take(&ENVIRONMENT_VARS).map_err(missing)?)?],
        CredentialKind::WorkloadIdentity => vec![workload(take(&WORKLOAD_VARS).map_err(missing)?)?],
        CredentialKind::ManagedIdentity => match var("IDENTITY_ENDPOINT") {
            Some(_) => vec![app_service(take(&APP_SERVICE_VARS).map_err(missing)?)?],
            None => vec![imds(false)],
        },
        CredentialKind::AzureCli => {
            vec![Source::AzureCli {
                az: find_az(var("PATH")).ok_or(AzureError::AzureCliNotFound)?,
            }]
        }
        CredentialKind::Auto => {
            let mut looked_for = Vec::new();
            let mut note = |what: &str, names: &[&str], missing: &[&str]| {
                looked_for.push(format!(
                    "{} for {what} (unset: {})",
                    names.join(" + "),
                    missing.join(", ")
                ));
            };
            match take(&ENVIRONMENT_VARS) {
                Ok(values) => return Ok((vec![environment(values)?], String::new())),
                Err(missing) => note("environment", &ENVIRONMENT_VARS, &missing),
            }
            match take(&WORKLOAD_VARS) {
                Ok(values) => return Ok((vec![workload(values)?], String::new())),
                Err(missing) => note("workload-identity", &WORKLOAD_VARS, &missing),
            }
            match take(&APP_SERVICE_VARS) {
                Ok(values) => return Ok((vec![app_service(values)?], String::new())),
                Err(missing) => note("managed-identity", &APP_SERVICE_VARS, &missing),
            }
            looked_for.push("the instance metadata service for managed-identity".into());
            let mut sources = vec![imds(true)];
            match find_az(var("PATH")) {
                Some(az) => sources.push(Source::AzureCli { az }),
                None => looked_for.push("`az` on PATH for azure-cli (not found)".into()),
            }
            return Ok((sources, looked_for.join("; ")));
        }
    };
    Ok((sources, String::new()))
}

/// `AZURE_AUTHORITY_HOST`, or the public cloud's: HTTPS, or plain HTTP on
/// loopback only (a client secret never crosses a network in the clear).
pub(super) fn authority_host(value: Option<String>) -> Result<String, AzureError> {
    let Some(value) = value else {
        return Ok(DEFAULT_AUTHORITY.to_string());
    };
    let bad = |detail: String| AzureError::BadSetting {
        name: "AZURE_AUTHORITY_HOST",
        detail,
    };
    let url = url::Url::parse(value.trim()).map_err(|e| bad(format!("{value:?}: {e}")))?;
    let host = url.host_str().unwrap_or_default();
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(host) => {}
        _ => return Err(bad(format!("{value:?}: must be an https:// URL"))),
    }
    Ok(value.trim().trim_end_matches('/').to_string())
}

pub(super) fn tenant_id(value: String) -> Result<String, AzureError> {
    if value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        Ok(value)
    } else {
        Err(AzureError::BadSetting {
            name: "AZURE_TENANT_ID",
            detail: format!("{value:?} is not a tenant id or domain"),
        })
    }
}

pub(super) fn find_az(path: Option<String>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&path?)
        .map(|dir| dir.join("az"))
        .find(|candidate| {
            std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_hosts() {
        assert_eq!(authority_host(None).unwrap(), DEFAULT_AUTHORITY);
        assert_eq!(
            authority_host(Some("https://login.microsoftonline.us/".into())).unwrap(),
            "https://login.microsoftonline.us"
        );
        assert!(authority_host(Some("http://127.0.0.1:5/".into())).is_ok());
        assert!(authority_host(Some("http://login.example.com".into())).is_err());
    }
}
