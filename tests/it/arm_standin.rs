//! The Azure Resource Manager stand-in (`support::arm`) itself: first
//! pinned by Microsoft's own Python SDK (azure-mgmt-containerregistry over
//! azure-core and azure-mgmt-core's ARMPolling, in the venv `scripts/setup`
//! makes), then its protocol checked request by request over plain HTTP:
//! tokens, api-versions, ARM's error codes, the importImage long-running
//! operation and ACR import's limits, and what the copy leaves behind (the
//! image, every platform, the tags asked for, and nothing attached).

use os_testkit as support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::arm::{self, API_VERSION, ARM_RESOURCE, AcrEntry, ArmConfig, ArmStandIn, Fault};
use support::cosign::cosign_ok;
use support::images;
use support::push::{self, Response};
use support::registry::TestRegistry;

const REPO: &str = "onestream/app";
const TAG: &str = "1.0";
const PASSWORD: &str = "arm-standin-test";

/// dev and prod fronted as ACRs `devacr` and `prodacr`, a multi-platform
/// image in dev under `REPO:TAG`.
struct Acrs {
    dev: TestRegistry,
    prod: TestRegistry,
    arm: ArmStandIn,
    image: images::TestImage,
    dir: tempfile::TempDir,
}

impl Acrs {
    fn new() -> Acrs {
        Acrs::with(|config| config)
    }

    fn with(configure: impl FnOnce(ArmConfig) -> ArmConfig) -> Acrs {
        let dev = TestRegistry::start();
        let prod = TestRegistry::start();
        let arm = ArmStandIn::start(configure(ArmConfig::new(vec![
            AcrEntry::new("devacr", dev.host()),
            AcrEntry::new("prodacr", prod.host()),
        ])));
        let dir = tempfile::tempdir().unwrap();
        let image = images::multi_arch(&dir.path().join("l"), TAG, "arm-standin");
        images::push(&image, &dev, REPO, TAG);
        Acrs {
            dev,
            prod,
            arm,
            image,
            dir,
        }
    }

    fn by_digest(&self) -> String {
        format!("{REPO}@{}", self.image.digest)
    }

    /// ImportImageParameters from devacr by digest to `REPO:tag`.
    fn dev_import(&self, tag: &str, mode: &str) -> Value {
        json!({
            "source": {"resourceId": self.arm.registry_id("devacr"), "sourceImage": self.by_digest()},
            "targetTags": [format!("{REPO}:{tag}")],
            "mode": mode,
        })
    }
}

fn arm_host(arm: &ArmStandIn) -> String {
    arm.endpoint().trim_start_matches("http://").to_string()
}

fn json_of(answer: &Response) -> Value {
    serde_json::from_slice(&answer.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&answer.body)))
}

/// One request to the stand-in; `target` is a path (with its query) or an
/// absolute URL on it (a `Location`).
fn call(arm: &ArmStandIn, method: &str, target: &str, token: Option<&str>, body: Option<&Value>) -> Response {
    let path = target.strip_prefix(&arm.endpoint()).unwrap_or(target);
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(bearer) = &bearer {
        headers.push(("Authorization", bearer.as_str()));
    }
    let body = body.map(|b| serde_json::to_vec(b).unwrap()).unwrap_or_default();
    push::request(&arm_host(arm), method, path, &headers, &body).unwrap()
}

fn token_answer(arm: &ArmStandIn, secret: &str, scope: &str) -> Response {
    let config = arm.config();
    let form = url_form(&[
        ("grant_type", "client_credentials"),
        ("client_id", &config.client_id),
        ("client_secret", secret),
        ("scope", scope),
    ]);
    push::request(
        &arm_host(arm),
        "POST",
        &format!("/{}/oauth2/v2.0/token", config.tenant),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )
    .unwrap()
}

fn url_form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let v: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A token for ARM from the stand-in's token endpoint.
fn arm_token(arm: &ArmStandIn) -> String {
    let answer = token_answer(
        arm,
        &arm.config().client_secret,
        &format!("{ARM_RESOURCE}/.default"),
    );
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    json_of(&answer)["access_token"].as_str().unwrap().to_string()
}

fn import(arm: &ArmStandIn, token: &str, registry: &str, body: &Value) -> Response {
    let path = format!(
        "{}/importImage?api-version={API_VERSION}",
        arm.registry_id(registry)
    );
    call(arm, "POST", &path, Some(token), Some(body))
}

/// Polls a `Location` (as long as `Retry-After` asks) until it stops
/// answering 202; returns the 202s seen and the last answer.
fn wait(arm: &ArmStandIn, token: &str, location: &str) -> (u32, Response) {
    for accepted in 0..200 {
        let answer = call(arm, "GET", location, Some(token), None);
        if answer.status != 202 {
            return (accepted, answer);
        }
        let retry_after: u64 = answer
            .header("Retry-After")
            .expect("a 202 poll says when to poll again")
            .parse()
            .unwrap();
        std::thread::sleep(Duration::from_secs(retry_after).max(Duration::from_millis(20)));
    }
    panic!("{location} still running after 200 polls");
}

/// An import accepted (202 with a Location) and polled to its end.
fn import_to_end(arm: &ArmStandIn, token: &str, registry: &str, body: &Value) -> Response {
    let accepted = import(arm, token, registry, body);
    assert_eq!(
        accepted.status,
        202,
        "{}",
        String::from_utf8_lossy(&accepted.body)
    );
    let location = accepted
        .header("Location")
        .expect("a Location to poll")
        .to_string();
    wait(arm, token, &location).1
}

fn error_code(answer: &Response) -> String {
    json_of(answer)["error"]["code"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn error_message(answer: &Response) -> String {
    json_of(answer)["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Every tag of `repo` in `registry` (none when the repository is unknown).
fn tags(registry: &TestRegistry, repo: &str) -> Vec<String> {
    let answer = push::request(registry.host(), "GET", &format!("/v2/{repo}/tags/list"), &[], &[]).unwrap();
    if answer.status == 404 {
        return Vec::new();
    }
    let mut tags: Vec<String> = json_of(&answer)["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    tags.sort();
    tags
}

/// The manifest `registry` serves for `repo@reference`, if any.
fn manifest(registry: &TestRegistry, repo: &str, reference: &str) -> Option<Vec<u8>> {
    let accept = [images::OCI_INDEX, images::OCI_MANIFEST].join(", ");
    let answer = push::request(
        registry.host(),
        "GET",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Accept", &accept)],
        &[],
    )
    .unwrap();
    (answer.status == 200).then_some(answer.body)
}

fn has_blob(registry: &TestRegistry, repo: &str, digest: &str) -> bool {
    push::request(
        registry.host(),
        "HEAD",
        &format!("/v2/{repo}/blobs/{digest}"),
        &[],
        &[],
    )
    .unwrap()
    .status
        == 200
}

/// The image's children and all their blobs are in `registry`'s `repo`,
/// byte for byte.
fn assert_every_platform_in(registry: &TestRegistry, repo: &str, image: &images::TestImage) {
    let index = image.manifest();
    let children = index["manifests"].as_array().unwrap();
    assert_eq!(children.len(), image.platforms.len());
    for child in children {
        let digest = child["digest"].as_str().unwrap();
        let bytes = manifest(registry, repo, digest).unwrap_or_else(|| panic!("{repo}@{digest} is missing"));
        assert_eq!(images::sha256_digest(&bytes), digest);
        let child: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(child["mediaType"], images::OCI_MANIFEST);
        let layers = child["layers"].as_array().unwrap().iter();
        for blob in std::iter::once(&child["config"]).chain(layers) {
            let blob = blob["digest"].as_str().unwrap();
            assert!(has_blob(registry, repo, blob), "{repo} lacks blob {blob}");
        }
    }
}

/// Signs `REPO@digest` in `registry` with the real cosign (a `.sig` tag).
fn cosign_sign(acrs: &Acrs) {
    let home = acrs.dir.path();
    let prefix = home.join("k");
    cosign_ok(
        &[
            "generate-key-pair",
            "--output-key-prefix",
            prefix.to_str().unwrap(),
        ],
        PASSWORD,
        home,
    );
    let key = home.join("k.key");
    let reference = format!("{}/{}", acrs.dev.host(), acrs.by_digest());
    cosign_ok(
        &[
            "sign",
            "--yes",
            "--key",
            key.to_str().unwrap(),
            "--tlog-upload=false",
            "--allow-http-registry",
            &reference,
        ],
        PASSWORD,
        home,
    );
}

#[test]
fn the_azure_sdk_lists_gets_and_imports_and_only_the_image_arrives() {
    let python = arm::azure_sdk_python();
    // Two pages of one registry each, a real Retry-After on every 202.
    let acrs = Acrs::with(|config| ArmConfig {
        page_size: 1,
        retry_after_secs: 1,
        ..config
    });
    cosign_sign(&acrs);
    let signature_tag = format!("{}.sig", acrs.image.digest.replace(':', "-"));
    assert_eq!(
        tags(&acrs.dev, REPO),
        vec![TAG.to_string(), signature_tag.clone()]
    );
    // A tag of another digest at prod, for NoForce to trip on.
    let other = images::single_arch(&acrs.dir.path().join("other"), "taken", "other");
    images::push(&other, &acrs.prod, REPO, "taken");
    acrs.arm.inject(Fault::Throttle { retry_after_secs: 1 });
    acrs.arm.inject(Fault::ThrottlePoll);

    let config = acrs.arm.config();
    let group = arm::RESOURCE_GROUP;
    let spec = json!({
        "endpoint": acrs.arm.endpoint(),
        "subscription": config.subscription,
        "authority": acrs.arm.authority(),
        "tenant": config.tenant,
        "client_id": config.client_id,
        "client_secret": config.client_secret,
        "get": {"resource_group": group, "name": "devacr"},
        "imports": [
            {"resource_group": group, "registry": "prodacr", "parameters": acrs.dev_import(TAG, "NoForce")},
            {"resource_group": group, "registry": "prodacr", "parameters": {
                "source": {"resourceId": acrs.arm.registry_id("devacr"), "sourceImage": "onestream/missing:nope"},
                "targetTags": [format!("{REPO}:missing")],
                "mode": "NoForce",
            }},
            {"resource_group": group, "registry": "prodacr", "parameters": acrs.dev_import("taken", "NoForce")},
        ],
    });
    let mut child = Command::new(&python)
        .arg(arm::azure_sdk_script())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(spec.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let log = acrs.arm.requests();
    assert!(
        output.status.success(),
        "the SDK script failed ({}):\n{}\nstand-in log: {log:#?}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let out: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(out["api_version"], API_VERSION, "{out}");

    // Registries_List over two pages (the SDK followed nextLink), Registries_Get.
    let login_servers: Vec<&str> = out["registries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["login_server"].as_str().unwrap())
        .collect();
    assert_eq!(login_servers, vec![acrs.dev.host(), acrs.prod.host()], "{out}");
    assert!(
        log.iter()
            .any(|l| l.contains("skipToken=1") && l.ends_with("-> 200")),
        "{log:#?}"
    );
    let got = &out["get"];
    assert_eq!(got["id"], acrs.arm.registry_id("devacr"));
    assert_eq!(got["type"], "Microsoft.ContainerRegistry/registries");
    assert_eq!(got["sku"], "Premium");
    assert_eq!(got["provisioning_state"], "Succeeded");
    assert_eq!(got["export_policy"], "enabled");

    // The import: throttled once at the POST and once at a poll, both
    // retried by azure-core as Retry-After asked, then polled to its end.
    let outcomes = out["imports"].as_array().unwrap();
    assert_eq!(outcomes[0]["status"], "Succeeded", "{out}\n{log:#?}");
    assert_eq!(
        log.iter().filter(|l| l.ends_with("-> 429")).count(),
        2,
        "{log:#?}"
    );
    assert!(
        outcomes[0]["seconds"].as_f64().unwrap() >= 2.0,
        "the SDK waited as Retry-After said: {out}"
    );
    let imports = acrs.arm.imports();
    assert_eq!(
        imports.len(),
        3,
        "every accepted POST, none throttled: {imports:?}"
    );
    let body = &imports[0]["body"];
    assert_eq!(imports[0]["registry"], "prodacr");
    assert_eq!(body["source"]["resourceId"], acrs.arm.registry_id("devacr"));
    assert_eq!(body["source"]["sourceImage"], acrs.by_digest());
    assert_eq!(body["targetTags"], json!([format!("{REPO}:{TAG}")]));
    assert_eq!(body["mode"], "NoForce");

    // The failures, as the SDK surfaces them from the Location poll.
    let missing = &outcomes[1]["error"];
    assert_eq!(missing["status_code"], 404, "{out}");
    assert_eq!(missing["code"], "ManifestUnknown", "{out}");
    assert!(
        missing["message"]
            .as_str()
            .unwrap()
            .contains("onestream/missing:nope"),
        "{out}"
    );
    let conflict = &outcomes[2]["error"];
    assert_eq!(conflict["status_code"], 409, "{out}");
    assert_eq!(conflict["code"], "Conflict", "{out}");
    assert!(
        conflict["message"].as_str().unwrap().contains(&other.digest),
        "{out}"
    );

    // At prod: the exact bytes under the tag, every platform, and nothing
    // attached (the .sig stayed behind); the taken tag untouched.
    let served = manifest(&acrs.prod, REPO, TAG).expect("the tag at prod");
    assert_eq!(images::sha256_digest(&served), acrs.image.digest);
    assert_every_platform_in(&acrs.prod, REPO, &acrs.image);
    assert_eq!(tags(&acrs.prod, REPO), vec![TAG.to_string(), "taken".to_string()]);
    assert!(manifest(&acrs.prod, REPO, &signature_tag).is_none());
    assert_eq!(
        images::sha256_digest(&manifest(&acrs.prod, REPO, "taken").unwrap()),
        other.digest
    );
    assert!(out["tokens_fetched"].as_u64().unwrap() >= 1, "{out}");
}

#[test]
fn a_missing_malformed_or_unknown_api_version_is_refused_with_arms_codes() {
    let prod = TestRegistry::start();
    let arm = ArmStandIn::start(ArmConfig::new(vec![AcrEntry::new("prodacr", prod.host())]));
    let token = arm_token(&arm);
    let list = format!(
        "/subscriptions/{}/providers/Microsoft.ContainerRegistry/registries",
        arm.config().subscription
    );
    for (query, code, names) in [
        ("", "MissingApiVersionParameter", "api-version"),
        ("?api-version=latest", "InvalidApiVersionParameter", "latest"),
        (
            "?api-version=2019-05-01",
            "NoRegisteredProviderFound",
            "2019-05-01",
        ),
    ] {
        let answer = call(&arm, "GET", &format!("{list}{query}"), Some(&token), None);
        assert_eq!(answer.status, 400, "{query}");
        assert_eq!(error_code(&answer), code, "{query}");
        assert!(
            error_message(&answer).contains(names),
            "{}",
            error_message(&answer)
        );
    }
    let ok = call(
        &arm,
        "GET",
        &format!("{list}?api-version={API_VERSION}"),
        Some(&token),
        None,
    );
    assert_eq!(ok.status, 200);
    // The poll of an operation is checked too.
    let poll = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ContainerRegistry/locations/westeurope/operationResults/operationStatuses/registries-x",
        arm.config().subscription,
        arm::RESOURCE_GROUP
    );
    assert_eq!(
        error_code(&call(&arm, "GET", &poll, Some(&token), None)),
        "MissingApiVersionParameter"
    );
}

#[test]
fn a_wrong_secret_gets_invalid_client_and_arm_wants_a_token_for_itself() {
    let prod = TestRegistry::start();
    let arm = ArmStandIn::start(ArmConfig::new(vec![AcrEntry::new("prodacr", prod.host())]));
    let scope = format!("{ARM_RESOURCE}/.default");
    let refused = token_answer(&arm, "not-the-secret-91c", &scope);
    assert_eq!(refused.status, 401);
    assert_eq!(json_of(&refused)["error"], "invalid_client");
    assert!(
        json_of(&refused)["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS7000215")
    );
    let granted = json_of(&token_answer(&arm, &arm.config().client_secret, &scope));
    assert_eq!(granted["token_type"], "Bearer");
    assert_eq!(granted["expires_in"], arm::EXPIRES_IN);
    assert_eq!(arm.token_requests(), 2);

    let get = format!("{}?api-version={API_VERSION}", arm.registry_id("prodacr"));
    let missing = call(&arm, "GET", &get, None, None);
    assert_eq!(missing.status, 401);
    assert_eq!(error_code(&missing), "AuthenticationFailed");
    let challenge = missing.header("WWW-Authenticate").expect("a challenge");
    assert!(
        challenge.starts_with(&format!(
            "Bearer authorization_uri=\"{}/{}\"",
            arm.authority(),
            arm.config().tenant
        )),
        "{challenge}"
    );
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    let forged = call(&arm, "GET", &get, Some("arm-token-never-issued"), None);
    assert_eq!(
        (forged.status, error_code(&forged).as_str()),
        (401, "InvalidAuthenticationToken")
    );
    let vault = json_of(&token_answer(
        &arm,
        &arm.config().client_secret,
        "https://vault.azure.net/.default",
    ));
    let foreign = call(&arm, "GET", &get, vault["access_token"].as_str(), None);
    assert_eq!(
        (foreign.status, error_code(&foreign).as_str()),
        (401, "InvalidAuthenticationTokenAudience")
    );
    let classic = arm.issue_token("https://management.core.windows.net");
    assert_eq!(call(&arm, "GET", &get, Some(&classic), None).status, 200);
    let granted = granted["access_token"].as_str().unwrap();
    assert_eq!(call(&arm, "GET", &get, Some(granted), None).status, 200);
    assert!(
        arm.requests().iter().any(|l| l == &format!("GET {get} -> 200")),
        "{:#?}",
        arm.requests()
    );
}

#[test]
fn registries_list_in_pages_and_get_as_the_spec_models_them() {
    let dev = TestRegistry::start();
    let prod = TestRegistry::start();
    let locked = AcrEntry {
        export_disabled: true,
        ..AcrEntry::new("lockedacr", prod.host())
    };
    let arm = ArmStandIn::start(ArmConfig {
        page_size: 2,
        ..ArmConfig::new(vec![
            AcrEntry::new("devacr", dev.host()),
            AcrEntry::new("prodacr", prod.host()),
            locked,
        ])
    });
    let token = arm_token(&arm);
    let subscription = arm.config().subscription.clone();
    let first = json_of(&call(
        &arm,
        "GET",
        &format!(
            "/subscriptions/{subscription}/providers/Microsoft.ContainerRegistry/registries?api-version={API_VERSION}"
        ),
        Some(&token),
        None,
    ));
    assert_eq!(first["value"].as_array().unwrap().len(), 2);
    let next = first["nextLink"].as_str().expect("a second page");
    assert!(next.starts_with(&arm.endpoint()), "{next}");
    let second = json_of(&call(&arm, "GET", next, Some(&token), None));
    assert!(second.get("nextLink").is_none(), "{second}");
    let last = &second["value"][0];
    assert_eq!(last["name"], "lockedacr");
    assert_eq!(
        last["properties"]["policies"]["exportPolicy"]["status"],
        "disabled"
    );
    assert_eq!(last["properties"]["publicNetworkAccess"], "Disabled");

    let dev_id = arm.registry_id("devacr");
    assert_eq!(
        dev_id,
        format!(
            "/subscriptions/{subscription}/resourceGroups/{}/providers/Microsoft.ContainerRegistry/registries/devacr",
            arm::RESOURCE_GROUP
        )
    );
    let got = json_of(&call(
        &arm,
        "GET",
        &format!("{dev_id}?api-version={API_VERSION}"),
        Some(&token),
        None,
    ));
    assert_eq!(got, first["value"][0], "Registries_Get and the list agree");
    assert_eq!(got["id"], dev_id);
    assert_eq!(got["type"], "Microsoft.ContainerRegistry/registries");
    assert_eq!(got["location"], arm::LOCATION);
    assert_eq!(got["sku"], json!({"name": "Premium", "tier": "Premium"}));
    assert_eq!(got["properties"]["loginServer"], dev.host());
    assert_eq!(got["properties"]["provisioningState"], "Succeeded");
    assert_eq!(got["properties"]["policies"]["exportPolicy"]["status"], "enabled");
    // ARM's path words and names are case-insensitive.
    let shouted = dev_id
        .replace("resourceGroups", "RESOURCEGROUPS")
        .replace("devacr", "DevAcr");
    assert_eq!(
        call(
            &arm,
            "GET",
            &format!("{shouted}?api-version={API_VERSION}"),
            Some(&token),
            None
        )
        .status,
        200
    );

    for (path, status, code) in [
        (
            "/subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.ContainerRegistry/registries".to_string(),
            404,
            "SubscriptionNotFound",
        ),
        (dev_id.replace(arm::RESOURCE_GROUP, "rg-elsewhere"), 404, "ResourceGroupNotFound"),
        (dev_id.replace("devacr", "nosuchacr"), 404, "ResourceNotFound"),
    ] {
        let answer = call(&arm, "GET", &format!("{path}?api-version={API_VERSION}"), Some(&token), None);
        assert_eq!((answer.status, error_code(&answer).as_str()), (status, code), "{path}");
    }
}

#[test]
fn invalid_import_parameters_are_refused_before_any_operation() {
    let acrs = Acrs::new();
    let token = arm_token(&acrs.arm);
    let dev_id = acrs.arm.registry_id("devacr");
    let digest = acrs.by_digest();
    let cases = [
        (json!({"targetTags": ["a:b"]}), "InvalidParameters", "'source'"),
        (
            json!({"source": {"resourceId": dev_id}, "targetTags": ["a:b"]}),
            "InvalidParameters",
            "sourceImage",
        ),
        (
            json!({"source": {"sourceImage": digest}, "targetTags": ["a:b"]}),
            "InvalidParameters",
            "registryUri",
        ),
        (
            json!({"source": {"resourceId": dev_id, "sourceImage": "Bad/Name:1"}, "targetTags": ["a:b"]}),
            "InvalidParameters",
            "Bad/Name",
        ),
        (
            json!({"source": {"resourceId": dev_id, "sourceImage": digest}, "targetTags": ["a:b"], "mode": "Sometimes"}),
            "InvalidParameters",
            "Sometimes",
        ),
        (
            json!({"source": {"registryUri": acrs.dev.host(), "sourceImage": digest, "credentials": {"username": "u"}}, "targetTags": ["a:b"]}),
            "InvalidParameters",
            "password",
        ),
        (
            json!({"source": {"resourceId": dev_id, "sourceImage": digest}}),
            "InvalidParameters",
            "targetTags",
        ),
    ];
    for (body, code, names) in cases {
        let answer = import(&acrs.arm, &token, "prodacr", &body);
        assert_eq!(answer.status, 400, "{body}");
        assert_eq!(error_code(&answer), code, "{body}");
        assert!(
            error_message(&answer).contains(names),
            "{body}: {}",
            error_message(&answer)
        );
        assert!(answer.header("Location").is_none());
    }
    let raw = |content_type: &str, body: &[u8]| {
        push::request(
            &arm_host(&acrs.arm),
            "POST",
            &format!(
                "{}/importImage?api-version={API_VERSION}",
                acrs.arm.registry_id("prodacr")
            ),
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("Content-Type", content_type),
            ],
            body,
        )
        .unwrap()
    };
    let garbled = raw("application/json; charset=utf-8", b"{not json");
    assert_eq!(
        (garbled.status, error_code(&garbled).as_str()),
        (400, "InvalidRequestContent")
    );
    let form = raw("application/x-www-form-urlencoded", b"source=x");
    assert_eq!(
        (form.status, error_code(&form).as_str()),
        (415, "UnsupportedMediaType")
    );
    let elsewhere = dev_id.replace("devacr", "goneacr");
    let gone = import(
        &acrs.arm,
        &token,
        "prodacr",
        &json!({"source": {"resourceId": elsewhere, "sourceImage": digest}, "targetTags": ["a:b"]}),
    );
    assert_eq!(
        (gone.status, error_code(&gone).as_str()),
        (404, "ResourceNotFound")
    );
    assert!(acrs.arm.imports().is_empty(), "{:?}", acrs.arm.imports());
    assert!(tags(&acrs.prod, "a").is_empty());
}

#[test]
fn an_import_runs_as_a_location_operation_and_copies_every_platform() {
    let acrs = Acrs::with(|config| ArmConfig {
        polls_before_done: 3,
        ..config
    });
    let token = arm_token(&acrs.arm);
    let body = json!({
        "source": {"resourceId": acrs.arm.registry_id("devacr"), "sourceImage": format!("{REPO}:{TAG}")},
        "targetTags": [format!("{REPO}:{TAG}"), "mirror/app"],
        "untaggedTargetRepositories": ["archive/app"],
    });
    let accepted = import(&acrs.arm, &token, "prodacr", &body);
    assert_eq!(accepted.status, 202);
    assert!(accepted.body.is_empty());
    assert_eq!(accepted.header("Retry-After"), Some("0"));
    assert!(
        accepted
            .header("x-ms-request-id")
            .is_some_and(|id| id.len() == 36)
    );
    let location = accepted.header("Location").unwrap().to_string();
    acrs.arm.wait_for_operations(Duration::from_secs(30));
    let prefix = format!(
        "{}/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ContainerRegistry/locations/{}/operationResults/operationStatuses/registries-",
        acrs.arm.endpoint(),
        acrs.arm.config().subscription,
        arm::RESOURCE_GROUP,
        arm::LOCATION
    );
    assert!(location.starts_with(&prefix), "{location}");
    assert!(
        location.ends_with(&format!("?api-version={API_VERSION}")),
        "{location}"
    );
    let (running, done) = wait(&acrs.arm, &token, &location);
    assert_eq!(running, 3, "polls_before_done polls answered 202");
    assert_eq!(done.status, 200);
    assert!(done.body.is_empty());
    // The tag, the tag taken from the source (`mirror/app` → `:1.0`), and
    // by digest only into the untagged repository.
    for (repo, reference) in [
        (REPO, TAG),
        ("mirror/app", TAG),
        ("archive/app", acrs.image.digest.as_str()),
    ] {
        let served = manifest(&acrs.prod, repo, reference).unwrap_or_else(|| panic!("{repo}:{reference}"));
        assert_eq!(images::sha256_digest(&served), acrs.image.digest);
        assert_every_platform_in(&acrs.prod, repo, &acrs.image);
    }
    assert_eq!(tags(&acrs.prod, "mirror/app"), vec![TAG.to_string()]);
    assert!(
        tags(&acrs.prod, "archive/app").is_empty(),
        "no tag in an untagged repository"
    );
    // A finished operation keeps its answer.
    assert_eq!(call(&acrs.arm, "GET", &location, Some(&token), None).status, 200);
}

#[test]
fn an_unknown_source_image_fails_the_operation_naming_it() {
    let acrs = Acrs::new();
    let token = arm_token(&acrs.arm);
    let body = json!({
        "source": {"resourceId": acrs.arm.registry_id("devacr"), "sourceImage": "onestream/app:no-such-tag"},
        "targetTags": [format!("{REPO}:{TAG}")],
    });
    let failed = import_to_end(&acrs.arm, &token, "prodacr", &body);
    assert_eq!(
        (failed.status, error_code(&failed).as_str()),
        (404, "ManifestUnknown")
    );
    assert!(
        error_message(&failed).contains("onestream/app:no-such-tag"),
        "{}",
        error_message(&failed)
    );
    assert!(
        failed.header("Retry-After").is_none(),
        "a failure is not 'try again'"
    );
    assert!(tags(&acrs.prod, REPO).is_empty());
}

#[test]
fn no_force_refuses_a_moved_tag_before_copying_and_force_moves_it() {
    let acrs = Acrs::new();
    let token = arm_token(&acrs.arm);
    let other = images::single_arch(&acrs.dir.path().join("other"), TAG, "moved");
    images::push(&other, &acrs.prod, REPO, TAG);

    let refused = import_to_end(&acrs.arm, &token, "prodacr", &acrs.dev_import(TAG, "NoForce"));
    assert_eq!((refused.status, error_code(&refused).as_str()), (409, "Conflict"));
    assert!(
        error_message(&refused).contains(&other.digest),
        "{}",
        error_message(&refused)
    );
    let child = acrs.image.manifest()["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(manifest(&acrs.prod, REPO, &child).is_none(), "nothing copied");
    assert_eq!(
        images::sha256_digest(&manifest(&acrs.prod, REPO, TAG).unwrap()),
        other.digest
    );

    let forced = import_to_end(&acrs.arm, &token, "prodacr", &acrs.dev_import(TAG, "Force"));
    assert_eq!(forced.status, 200);
    assert_eq!(
        images::sha256_digest(&manifest(&acrs.prod, REPO, TAG).unwrap()),
        acrs.image.digest
    );
    // A tag already naming the digest is no conflict: a re-run is a no-op.
    let again = import_to_end(&acrs.arm, &token, "prodacr", &acrs.dev_import(TAG, "NoForce"));
    assert_eq!(again.status, 200);
    assert_eq!(acrs.arm.imports().len(), 3);
}

#[test]
fn an_image_of_more_than_50_manifests_fails_and_one_of_50_imports() {
    let acrs = Acrs::new();
    let token = arm_token(&acrs.arm);
    let child = images::single_arch(&acrs.dir.path().join("child"), "c", "child");
    images::push(&child, &acrs.dev, REPO, "child");
    let index = |entries: usize| {
        let bytes = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": images::OCI_INDEX,
            "manifests": vec![json!({"mediaType": images::OCI_MANIFEST, "digest": child.digest, "size": child.size}); entries],
        }))
        .unwrap();
        push::put_manifest(
            acrs.dev.host(),
            REPO,
            &format!("i{entries}"),
            images::OCI_INDEX,
            &bytes,
        )
        .unwrap()
    };
    let (fifty, fifty_one) = (index(49), index(50));
    let from = |digest: &str, tag: &str| {
        json!({
            "source": {"resourceId": acrs.arm.registry_id("devacr"), "sourceImage": format!("{REPO}@{digest}")},
            "targetTags": [format!("{REPO}:{tag}")],
        })
    };
    let failed = import_to_end(&acrs.arm, &token, "prodacr", &from(&fifty_one, "big"));
    assert_eq!(
        (failed.status, error_code(&failed).as_str()),
        (400, "TooManyManifests")
    );
    assert!(
        error_message(&failed).contains("50"),
        "{}",
        error_message(&failed)
    );
    assert!(manifest(&acrs.prod, REPO, "big").is_none());
    let imported = import_to_end(&acrs.arm, &token, "prodacr", &from(&fifty, "fifty"));
    assert_eq!(
        imported.status,
        200,
        "{}",
        String::from_utf8_lossy(&imported.body)
    );
    assert_eq!(
        images::sha256_digest(&manifest(&acrs.prod, REPO, "fifty").unwrap()),
        fifty
    );
}

#[test]
fn a_source_whose_export_policy_is_disabled_is_refused() {
    let dev = TestRegistry::start();
    let prod = TestRegistry::start();
    let locked = AcrEntry {
        export_disabled: true,
        ..AcrEntry::new("devacr", dev.host())
    };
    let arm = ArmStandIn::start(ArmConfig::new(vec![
        locked,
        AcrEntry::new("prodacr", prod.host()),
    ]));
    let dir = tempfile::tempdir().unwrap();
    let image = images::single_arch(dir.path(), TAG, "locked");
    images::push(&image, &dev, REPO, TAG);
    let token = arm_token(&arm);
    let image_ref = format!("{REPO}@{}", image.digest);
    for source in [
        json!({"resourceId": arm.registry_id("devacr"), "sourceImage": image_ref}),
        json!({"registryUri": dev.host(), "sourceImage": image_ref}),
    ] {
        let body = json!({"source": source, "targetTags": [format!("{REPO}:{TAG}")]});
        let refused = import(&arm, &token, "prodacr", &body);
        assert_eq!(
            (refused.status, error_code(&refused).as_str()),
            (400, "ExportPolicyDisabled"),
            "{source}"
        );
        assert!(error_message(&refused).contains("devacr"));
    }
    assert!(arm.imports().is_empty());
    assert!(tags(&prod, REPO).is_empty());
}

#[test]
fn a_throttled_import_answers_429_with_retry_after_once() {
    let acrs = Acrs::new();
    let token = arm_token(&acrs.arm);
    acrs.arm.inject(Fault::Throttle { retry_after_secs: 7 });
    let body = acrs.dev_import(TAG, "NoForce");
    let throttled = import(&acrs.arm, &token, "prodacr", &body);
    assert_eq!(throttled.status, 429);
    assert_eq!(throttled.header("Retry-After"), Some("7"));
    assert_eq!(error_code(&throttled), "SubscriptionRequestsThrottled");
    assert!(
        acrs.arm.imports().is_empty(),
        "a throttled request is not accepted"
    );

    acrs.arm.inject(Fault::ThrottlePoll);
    let accepted = import(&acrs.arm, &token, "prodacr", &body);
    assert_eq!(accepted.status, 202, "once");
    let location = accepted.header("Location").unwrap().to_string();
    let poll = call(&acrs.arm, "GET", &location, Some(&token), None);
    assert_eq!((poll.status, poll.header("Retry-After")), (429, Some("1")));
    acrs.arm.wait_for_operations(Duration::from_secs(30));
    let (running, done) = wait(&acrs.arm, &token, &location);
    assert_eq!(
        (running, done.status),
        (1, 200),
        "the throttled poll was not counted"
    );
    let log = acrs.arm.requests();
    let statuses: Vec<&str> = log
        .iter()
        .filter(|l| !l.contains("/oauth2/"))
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(statuses, vec!["429", "202", "429", "202", "200"], "{log:#?}");
}

#[test]
fn fail_midway_copies_the_blobs_and_no_manifest_and_the_poll_gives_the_error() {
    let acrs = Acrs::new();
    let token = arm_token(&acrs.arm);
    acrs.arm.inject(Fault::FailMidway);
    let failed = import_to_end(&acrs.arm, &token, "prodacr", &acrs.dev_import(TAG, "NoForce"));
    assert_eq!(
        (failed.status, error_code(&failed).as_str()),
        (400, "InvalidParameters")
    );
    assert!(
        error_message(&failed).starts_with("Error copying"),
        "{}",
        error_message(&failed)
    );
    let child: Value = serde_json::from_slice(
        &acrs
            .image
            .blob(acrs.image.manifest()["manifests"][0]["digest"].as_str().unwrap()),
    )
    .unwrap();
    let layer = child["layers"][0]["digest"].as_str().unwrap();
    assert!(has_blob(&acrs.prod, REPO, layer), "the blobs were copied");
    assert!(tags(&acrs.prod, REPO).is_empty(), "no tag");
    assert!(
        manifest(&acrs.prod, REPO, &acrs.image.digest).is_none(),
        "no manifest"
    );
    // Once: the next import completes.
    assert_eq!(
        import_to_end(&acrs.arm, &token, "prodacr", &acrs.dev_import(TAG, "NoForce")).status,
        200
    );
    assert_every_platform_in(&acrs.prod, REPO, &acrs.image);
}

#[test]
fn a_registry_uri_source_is_read_with_the_credentials_given() {
    // A token-auth registry outside the subscription, by its host name.
    let source = TestRegistry::start_token("puller", "pull-s3cret");
    let prod = TestRegistry::start();
    let arm = ArmStandIn::start(ArmConfig::new(vec![AcrEntry::new("prodacr", prod.host())]));
    let dir = tempfile::tempdir().unwrap();
    let image = images::multi_arch(dir.path(), TAG, "outside");
    images::push(&image, &source, REPO, TAG);
    let token = arm_token(&arm);
    let body = |password: &str| {
        json!({
            "source": {
                "registryUri": source.host(),
                "sourceImage": format!("{REPO}:{TAG}"),
                "credentials": {"username": "puller", "password": password},
            },
            "targetTags": [format!("{REPO}:{TAG}")],
        })
    };
    let refused = import_to_end(&arm, &token, "prodacr", &body("wrong"));
    assert_eq!(
        (refused.status, error_code(&refused).as_str()),
        (400, "InvalidParameters")
    );
    assert!(
        error_message(&refused).contains("401"),
        "{}",
        error_message(&refused)
    );
    let issued = source.token_requests();
    let imported = import_to_end(&arm, &token, "prodacr", &body("pull-s3cret"));
    assert_eq!(
        imported.status,
        200,
        "{}",
        String::from_utf8_lossy(&imported.body)
    );
    assert!(
        source.token_requests() > issued,
        "the realm issued tokens to the import"
    );
    assert_eq!(
        images::sha256_digest(&manifest(&prod, REPO, TAG).unwrap()),
        image.digest
    );
    assert_every_platform_in(&prod, REPO, &image);
}
