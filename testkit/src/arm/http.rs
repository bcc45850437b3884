//! ARM's HTTP face: every request goes through [`handle`] and [`route`].
//!
//! Every request but the token endpoint's is ARM's. It needs
//! `Authorization: Bearer <token>` with a token issued for
//! `https://management.azure.com` (or the classic
//! `https://management.core.windows.net`), else 401 with a
//! `WWW-Authenticate: Bearer authorization_uri="…", error="invalid_token", …`
//! challenge and `AuthenticationFailed` (no or malformed header),
//! `InvalidAuthenticationToken` (a token it never issued) or
//! `InvalidAuthenticationTokenAudience`. Then `api-version`: missing → 400
//! `MissingApiVersionParameter`; not a date-shaped version → 400
//! `InvalidApiVersionParameter`; a well-formed version other than
//! [`API_VERSION`] → 400 `NoRegisteredProviderFound` (what ARM answers for a
//! resource provider's type it has no such version of).
//!
//! Throttling ([`Fault::Throttle`](super::Fault::Throttle),
//! [`Fault::ThrottlePoll`](super::Fault::ThrottlePoll)) answers 429 with
//! `Retry-After` and ARM's `SubscriptionRequestsThrottled`. Every answer
//! carries `x-ms-request-id` and `x-ms-correlation-request-id`; every error
//! body is ARM's `{"error":{"code","message"}}` (Entra's own shape at the
//! token endpoint).

use std::sync::Arc;

use serde_json::{Value, json};

use super::entra::token_endpoint;
use super::import::import;
use super::operation::poll;
use super::registries::{check_subscription, find_registry, list, registry_json};
use super::{API_VERSION, ARM_RESOURCE, LOCATION, State, guid};
use crate::form::{param, parse_form};

/// Audiences ARM accepts in a token.
const AUDIENCES: [&str; 2] = [ARM_RESOURCE, "https://management.core.windows.net"];

/// An answer: its status, headers beyond the usual ones, a JSON body.
pub(super) struct Reply {
    status: u16,
    pub(super) headers: Vec<(&'static str, String)>,
    /// `None`: an empty body.
    body: Option<Value>,
}

pub(super) fn reply(status: u16, body: Value) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: Some(body),
    }
}

pub(super) fn empty(status: u16) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: None,
    }
}

/// ARM's error envelope.
pub(super) fn arm_error(status: u16, code: &str, message: impl Into<String>) -> Reply {
    reply(
        status,
        json!({ "error": { "code": code, "message": message.into() } }),
    )
}

pub(super) fn throttled(kind: &str, subscription: &str, retry_after_secs: u64) -> Reply {
    let mut reply = arm_error(
        429,
        "SubscriptionRequestsThrottled",
        format!(
            "Number of '{kind}' requests for subscription '{subscription}' exceeded. \
             Please try again after '{retry_after_secs}' seconds after the time specified in the 'Retry-After' header."
        ),
    );
    reply.headers.push(("Retry-After", retry_after_secs.to_string()));
    reply
        .headers
        .push(("x-ms-ratelimit-remaining-subscription-writes", "0".into()));
    reply
}

pub(super) fn handle(state: &Arc<State>, mut request: tiny_http::Request) {
    let method = request.method().to_string();
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let query = parse_form(query);
    let authorization = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str().to_string());
    let content_type = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Content-Type"))
        .map(|h| h.value.as_str().to_string());
    let mut body = Vec::new();
    let _ = request.as_reader().read_to_end(&mut body);
    let reply = route(
        state,
        &method,
        path,
        &query,
        authorization.as_deref(),
        content_type.as_deref(),
        &body,
    );
    state
        .log
        .lock()
        .unwrap()
        .push(format!("{method} {url} -> {}", reply.status));
    let bytes = reply.body.as_ref().map(Value::to_string).unwrap_or_default();
    let mut response = tiny_http::Response::from_data(bytes.into_bytes())
        .with_status_code(reply.status)
        .with_header(header_of("x-ms-request-id", &guid()))
        .with_header(header_of("x-ms-correlation-request-id", &guid()));
    if reply.body.is_some() {
        response.add_header(header_of("Content-Type", "application/json; charset=utf-8"));
    }
    for (name, value) in &reply.headers {
        response.add_header(header_of(name, value));
    }
    let _ = request.respond(response);
}

fn header_of(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("header")
}

fn route(
    state: &Arc<State>,
    method: &str,
    path: &str,
    query: &[(String, String)],
    authorization: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Reply {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let ("POST", [tenant, "oauth2", "v2.0", "token"]) = (method, segments.as_slice()) {
        return token_endpoint(state, tenant, &parse_form(&String::from_utf8_lossy(body)));
    }
    if let Err(refused) = authenticate(state, authorization) {
        return refused;
    }
    if let Err(refused) = check_api_version(state, query) {
        return refused;
    }
    let lower: Vec<String> = segments.iter().map(|s| s.to_ascii_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    let result = match (method, lower.as_slice()) {
        (
            "GET",
            [
                "subscriptions",
                _,
                "providers",
                "microsoft.containerregistry",
                "registries",
            ],
        ) => list(state, segments[1], query),
        (
            "GET",
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                "microsoft.containerregistry",
                "registries",
                _,
            ],
        ) => find_registry(state, segments[1], segments[3], segments[7])
            .map(|entry| reply(200, registry_json(state, entry))),
        (
            "POST",
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                "microsoft.containerregistry",
                "registries",
                _,
                "importimage",
            ],
        ) => find_registry(state, segments[1], segments[3], segments[7])
            .and_then(|entry| import(state, entry, content_type, body)),
        (
            "GET",
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                "microsoft.containerregistry",
                "locations",
                _,
                "operationresults",
                "operationstatuses",
                _,
            ],
        ) => check_subscription(state, segments[1]).map(|()| poll(state, segments[10])),
        _ => Err(arm_error(
            404,
            "NotFound",
            format!("The ARM stand-in has no route for {method} {path}."),
        )),
    };
    result.unwrap_or_else(|refused| refused)
}

fn authenticate(state: &State, authorization: Option<&str>) -> Result<(), Reply> {
    let refuse = |code: &str, message: &str, description: &str| {
        let mut reply = arm_error(401, code, message);
        reply.headers.push((
            "WWW-Authenticate",
            format!(
                "Bearer authorization_uri=\"{}/{}\", error=\"invalid_token\", error_description=\"{description}\"",
                state.base, state.config.tenant
            ),
        ));
        reply
    };
    let Some(authorization) = authorization else {
        return Err(refuse(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
            "The authentication failed because of missing 'Authorization' header.",
        ));
    };
    let token = match authorization.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("Bearer") && !token.trim().is_empty() => {
            token.trim()
        }
        _ => {
            return Err(refuse(
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is provided in an invalid format.",
                "The authentication failed because of an invalid 'Authorization' header.",
            ));
        }
    };
    match state.tokens.lock().unwrap().get(token) {
        None => Err(refuse(
            "InvalidAuthenticationToken",
            "The access token is invalid.",
            "The access token is invalid.",
        )),
        Some(audience) if !AUDIENCES.contains(&audience.as_str()) => Err(refuse(
            "InvalidAuthenticationTokenAudience",
            &format!(
                "The access token has been obtained for wrong audience or resource '{audience}'. It should exactly match with one of the allowed audiences 'https://management.core.windows.net/','https://management.core.windows.net','https://management.azure.com/','https://management.azure.com'."
            ),
            "The access token has been obtained for wrong audience or resource.",
        )),
        Some(_) => Ok(()),
    }
}

fn check_api_version(state: &State, query: &[(String, String)]) -> Result<(), Reply> {
    match param(query, "api-version") {
        Some(API_VERSION) => Ok(()),
        None | Some("") => Err(arm_error(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )),
        Some(version) if date_shaped(version) => {
            let mut locations: Vec<&str> = state
                .config
                .registries
                .iter()
                .map(|r| r.location.as_str())
                .collect();
            locations.sort_unstable();
            locations.dedup();
            let location = locations.first().copied().unwrap_or(LOCATION);
            Err(arm_error(
                400,
                "NoRegisteredProviderFound",
                format!(
                    "No registered resource provider found for location '{location}' and API version '{version}' for type 'registries'. The supported api-versions are '{API_VERSION}'. The supported locations are '{}'.",
                    locations.join(", ")
                ),
            ))
        }
        Some(version) => Err(arm_error(
            400,
            "InvalidApiVersionParameter",
            format!("The api-version '{version}' is invalid. The supported versions are '{API_VERSION}'."),
        )),
    }
}

/// `YYYY-MM-DD`, optionally `-preview` (or another suffix).
fn date_shaped(version: &str) -> bool {
    let bytes = version.as_bytes();
    let digits = |range: std::ops::Range<usize>| bytes[range].iter().all(u8::is_ascii_digit);
    bytes.len() >= 10
        && digits(0..4)
        && bytes[4] == b'-'
        && digits(5..7)
        && bytes[7] == b'-'
        && digits(8..10)
        && (bytes.len() == 10
            || (bytes[10] == b'-' && bytes.len() > 11 && bytes[11..].iter().all(u8::is_ascii_alphanumeric)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_are_told_apart_as_arm_does() {
        assert!(date_shaped("2025-11-01"));
        assert!(date_shaped("2019-06-01-preview"));
        assert!(!date_shaped("latest"));
        assert!(!date_shaped("2025-11-0"));
        assert!(!date_shaped("2025-11-01-"));
    }
}
