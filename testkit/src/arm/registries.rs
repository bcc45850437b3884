//! The registries: `Registries_List` and `Registries_Get`, and their
//! resource ids.
//!
//! `GET /subscriptions/{sub}/providers/Microsoft.ContainerRegistry/registries`
//! (`Registries_List`): `{"value":[Registry…],"nextLink"?}`, paged when
//! [`ArmConfig::page_size`](super::ArmConfig::page_size) is set (`nextLink`
//! absolute, with `$skipToken`).
//! `GET …/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/registries/{name}`
//! (`Registries_Get`). The Registry is the spec's model: `id`, `name`,
//! `type`, `location`, `tags`, `sku` Premium, `properties` (`loginServer`
//! = the registry's `127.0.0.1:PORT`, `provisioningState`, `policies`
//! with `exportPolicy.status`, `publicNetworkAccess` — `Disabled` with
//! exports, as ACR requires — …). Unknown subscription → 404
//! `SubscriptionNotFound`; resource group → 404 `ResourceGroupNotFound`;
//! registry → 404 `ResourceNotFound`. Path words and names match
//! case-insensitively, as ARM's do.

use serde_json::{Value, json};

use super::http::{Reply, arm_error, reply};
use super::{API_VERSION, AcrEntry, PROVIDER, State};
use crate::form::param;

pub(super) fn resource_id(subscription: &str, entry: &AcrEntry) -> String {
    format!(
        "/subscriptions/{subscription}/resourceGroups/{}/providers/{PROVIDER}/registries/{}",
        entry.resource_group, entry.name
    )
}

/// A registry resource id → (subscription, group, name).
pub(super) fn parse_resource_id(id: &str) -> Option<(&str, &str, &str)> {
    let segments: Vec<&str> = id.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        [s, subscription, g, group, p, provider, r, name]
            if s.eq_ignore_ascii_case("subscriptions")
                && g.eq_ignore_ascii_case("resourceGroups")
                && p.eq_ignore_ascii_case("providers")
                && provider.eq_ignore_ascii_case(PROVIDER)
                && r.eq_ignore_ascii_case("registries") =>
        {
            Some((subscription, group, name))
        }
        _ => None,
    }
}

pub(super) fn check_subscription(state: &State, subscription: &str) -> Result<(), Reply> {
    if subscription.eq_ignore_ascii_case(&state.config.subscription) {
        Ok(())
    } else {
        Err(arm_error(
            404,
            "SubscriptionNotFound",
            format!("The subscription '{subscription}' could not be found."),
        ))
    }
}

pub(super) fn find_registry<'a>(
    state: &'a State,
    subscription: &str,
    group: &str,
    name: &str,
) -> Result<&'a AcrEntry, Reply> {
    check_subscription(state, subscription)?;
    let registries = &state.config.registries;
    if !registries
        .iter()
        .any(|r| r.resource_group.eq_ignore_ascii_case(group))
    {
        return Err(arm_error(
            404,
            "ResourceGroupNotFound",
            format!("Resource group '{group}' could not be found."),
        ));
    }
    registries
        .iter()
        .find(|r| r.resource_group.eq_ignore_ascii_case(group) && r.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            arm_error(
                404,
                "ResourceNotFound",
                format!(
                    "The Resource '{PROVIDER}/registries/{name}' under resource group '{group}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
                ),
            )
        })
}

pub(super) fn list(state: &State, subscription: &str, query: &[(String, String)]) -> Result<Reply, Reply> {
    check_subscription(state, subscription)?;
    let all = &state.config.registries;
    let skip = match param(query, "$skipToken") {
        None => 0,
        Some(token) => token.parse::<usize>().map_err(|_| {
            arm_error(
                400,
                "InvalidSkipToken",
                format!("The skip token '{token}' is not valid."),
            )
        })?,
    };
    let page = if state.config.page_size == 0 {
        all.len()
    } else {
        state.config.page_size
    };
    let value: Vec<Value> = all
        .iter()
        .skip(skip)
        .take(page)
        .map(|entry| registry_json(state, entry))
        .collect();
    let mut body = json!({ "value": value });
    if skip + page < all.len() {
        body["nextLink"] = json!(format!(
            "{}/subscriptions/{}/providers/{PROVIDER}/registries?api-version={API_VERSION}&%24skipToken={}",
            state.base,
            state.config.subscription,
            skip + page
        ));
    }
    Ok(reply(200, body))
}

/// The spec's Registry model (as the RegistryGet example has it).
pub(super) fn registry_json(state: &State, entry: &AcrEntry) -> Value {
    let export = if entry.export_disabled {
        "disabled"
    } else {
        "enabled"
    };
    json!({
        "id": resource_id(&state.config.subscription, entry),
        "name": entry.name,
        "type": format!("{PROVIDER}/registries"),
        "location": entry.location,
        "tags": {},
        "sku": { "name": "Premium", "tier": "Premium" },
        "properties": {
            "loginServer": entry.host,
            "creationDate": "2024-05-01T08:00:00.0000000Z",
            "provisioningState": "Succeeded",
            "adminUserEnabled": entry.credentials.is_some(),
            "networkRuleSet": { "defaultAction": if entry.export_disabled { "Deny" } else { "Allow" }, "ipRules": [] },
            "policies": {
                "quarantinePolicy": { "status": "disabled" },
                "trustPolicy": { "type": "Notary", "status": "disabled" },
                "retentionPolicy": { "days": 7, "lastUpdatedTime": "2024-05-01T08:00:00.0000000+00:00", "status": "disabled" },
                "exportPolicy": { "status": export },
                "azureADAuthenticationAsArmPolicy": { "status": "enabled" },
            },
            "encryption": { "status": "disabled" },
            "status": null,
            "dataEndpointEnabled": false,
            "dataEndpointHostNames": [],
            "privateEndpointConnections": [],
            "publicNetworkAccess": if entry.export_disabled { "Disabled" } else { "Enabled" },
            "networkRuleBypassOptions": "AzureServices",
            "networkRuleBypassAllowedForTasks": false,
            "zoneRedundancy": "Disabled",
            "anonymousPullEnabled": false,
            "roleAssignmentMode": "LegacyRegistryPermissions",
        },
    })
}
