//! The Entra ID token endpoint in front of ARM.
//!
//! `POST /{tenant}/oauth2/v2.0/token` (point `AZURE_AUTHORITY_HOST` at
//! [`ArmStandIn::authority`](super::ArmStandIn::authority)):
//! `grant_type=client_credentials`, the configured `client_id` and
//! `client_secret`, `scope={resource}/.default`. A wrong secret gets 401
//! `{"error":"invalid_client",…}` (its description repeats the secret sent,
//! on purpose, as the Key Vault stand-in's does: a test can prove a client
//! scrubs it). Tokens are opaque random strings the stand-in remembers with
//! their audience. Errors are Entra's own shape, not ARM's.

use std::sync::atomic::Ordering;

use serde_json::json;

use super::http::{Reply, reply};
use super::{EXPIRES_IN, State, guid, now_secs, random_hex};
use crate::form::param;

/// Entra ID's error shape.
fn oauth_error(status: u16, error: &str, description: &str) -> Reply {
    reply(
        status,
        json!({
            "error": error,
            "error_description": description,
            "error_codes": [],
            "timestamp": now_secs(),
            "trace_id": guid(),
            "correlation_id": guid(),
        }),
    )
}

pub(super) fn token_endpoint(state: &State, tenant: &str, form: &[(String, String)]) -> Reply {
    state.token_requests.fetch_add(1, Ordering::SeqCst);
    let config = &state.config;
    let field = |name: &str| param(form, name);
    if !tenant.eq_ignore_ascii_case(&config.tenant) {
        return oauth_error(
            400,
            "invalid_request",
            &format!("AADSTS90002: Tenant '{tenant}' not found."),
        );
    }
    if field("grant_type") != Some("client_credentials") {
        return oauth_error(
            400,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.",
        );
    }
    let client_id = field("client_id").unwrap_or_default();
    if client_id != config.client_id {
        return oauth_error(
            400,
            "unauthorized_client",
            &format!(
                "AADSTS700016: Application with identifier '{client_id}' was not found in the directory '{tenant}'."
            ),
        );
    }
    match field("client_secret") {
        Some(secret) if secret == config.client_secret => {}
        Some(secret) => {
            return oauth_error(
                401,
                "invalid_client",
                &format!("AADSTS7000215: Invalid client secret provided ({secret})."),
            );
        }
        None => {
            return oauth_error(
                400,
                "invalid_client",
                "AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            );
        }
    }
    let scope = field("scope").unwrap_or_default();
    let Some(audience) = scope.strip_suffix("/.default").filter(|a| !a.contains(' ')) else {
        return oauth_error(
            400,
            "invalid_scope",
            &format!(
                "AADSTS1002012: The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        );
    };
    let token = issue(state, audience.trim_end_matches('/'));
    reply(
        200,
        json!({ "token_type": "Bearer", "expires_in": EXPIRES_IN, "ext_expires_in": EXPIRES_IN, "access_token": token }),
    )
}

pub(super) fn issue(state: &State, audience: &str) -> String {
    let token = format!("arm-token-{}", random_hex(24));
    state
        .tokens
        .lock()
        .unwrap()
        .insert(token.clone(), audience.to_string());
    token
}
