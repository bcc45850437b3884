//! `os-import --via acr-import|auto`: ACR's server-side import, against the
//! Resource Manager stand-in (`os_testkit::arm`, written from the public
//! REST spec and pinned by Microsoft's Python SDK in `arm_standin.rs`) that
//! fronts real distribution registries as ACRs. What the stand-in's import
//! leaves behind (every attachment) must be carried by os-import and verify
//! at the target with the real cosign.

use os_testkit as support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::arm::{AcrEntry, ArmConfig, ArmStandIn, Fault};
use support::bins::tool;
use support::cosign::cosign_ok;
use support::images;
use support::registry::TestRegistry;
use support::schema::{one, stdout};

const PASSWORD: &str = "acr-import-test";
const REPO: &str = "onestream/iam";
const TAG: &str = "2.0";

fn last_event(record: &Value) -> Value {
    record["history"].as_array().unwrap().last().unwrap().clone()
}

/// dev and prod registries fronted as ACRs `devacr` and `prodacr`, a
/// multi-platform image in dev, and a cosign key pair.
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
        let image = images::multi_arch(&dir.path().join("l"), TAG, "acr");
        images::push(&image, &dev, REPO, TAG);
        let prefix = dir.path().join("k");
        cosign_ok(
            &[
                "generate-key-pair",
                "--output-key-prefix",
                prefix.to_str().unwrap(),
            ],
            PASSWORD,
            dir.path(),
        );
        Acrs {
            dev,
            prod,
            arm,
            image,
            dir,
        }
    }

    fn home(&self) -> &Path {
        self.dir.path()
    }

    fn key(&self) -> PathBuf {
        self.home().join("k.key")
    }

    fn public(&self) -> PathBuf {
        self.home().join("k.pub")
    }

    fn at(&self, registry: &TestRegistry) -> String {
        format!("{}/{REPO}@{}", registry.host(), self.image.digest)
    }

    /// A `.sig` (cosign sign), an `.att` (cosign attest) and an OCI 1.1
    /// referrer (cosign sign --registry-referrers-mode=oci-1-1) in dev.
    fn attach_everything(&self) {
        let (key, reference) = (self.key(), self.at(&self.dev));
        let key = key.to_str().unwrap();
        let common = [
            "--yes",
            "--key",
            key,
            "--tlog-upload=false",
            "--allow-http-registry",
        ];
        let sign: Vec<&str> = ["sign"]
            .iter()
            .chain(&common)
            .copied()
            .chain([reference.as_str()])
            .collect();
        cosign_ok(&sign, PASSWORD, self.home());
        let predicate = self.home().join("provenance.json");
        std::fs::write(
            &predicate,
            r#"{"buildType":"https://ci.example.com/build/v1","builder":{"id":"https://ci.example.com"}}"#,
        )
        .unwrap();
        let predicate = predicate.to_str().unwrap();
        let attest: Vec<&str> = ["attest"]
            .iter()
            .chain(&common)
            .copied()
            .chain([
                "--type",
                "slsaprovenance",
                "--predicate",
                predicate,
                reference.as_str(),
            ])
            .collect();
        cosign_ok(&attest, PASSWORD, self.home());
        let referrer: Vec<&str> = ["sign"]
            .iter()
            .chain(&common)
            .copied()
            .chain([
                "--registry-referrers-mode=oci-1-1",
                "-a",
                "via=referrer",
                reference.as_str(),
            ])
            .collect();
        cosign_ok(&referrer, PASSWORD, self.home());
    }

    fn record(&self) -> String {
        stdout(
            &tool("os-digest")
                .arg(format!("{}/{REPO}:{TAG}", self.dev.host()))
                .assert()
                .success(),
        )
    }

    /// os-import into `to` the given way, with the stand-in's Azure
    /// environment.
    fn import(&self, to: &TestRegistry, via: &str, extra: &[&str]) -> assert_cmd::Command {
        let mut command = tool("os-import");
        command
            .args(["--to", &format!("{}/onestream", to.host()), "--via", via])
            .args(["--arm-endpoint", &self.arm.endpoint()])
            .args(extra)
            .write_stdin(self.record());
        for (name, value) in self.arm.env() {
            command.env(name, value);
        }
        command
    }

    fn cosign_verifies_everything_at_prod(&self) {
        let (public, at) = (self.public(), self.at(&self.prod));
        let public = public.to_str().unwrap();
        let common = [
            "--key",
            public,
            "--insecure-ignore-tlog=true",
            "--allow-http-registry",
        ];
        let verify: Vec<&str> = ["verify"]
            .iter()
            .chain(&common)
            .copied()
            .chain([at.as_str()])
            .collect();
        cosign_ok(&verify, PASSWORD, self.home());
        let attestation: Vec<&str> = ["verify-attestation"]
            .iter()
            .chain(&common)
            .copied()
            .chain(["--type", "slsaprovenance", at.as_str()])
            .collect();
        cosign_ok(&attestation, PASSWORD, self.home());
        let referrer: Vec<&str> = ["verify"]
            .iter()
            .chain(&common)
            .copied()
            .chain(["--experimental-oci11", "-a", "via=referrer", at.as_str()])
            .collect();
        cosign_ok(&referrer, PASSWORD, self.home());
    }
}

fn event_bytes(assert: &assert_cmd::assert::Assert) -> u64 {
    last_event(&one(assert))["bytesThroughAgent"].as_u64().unwrap()
}

#[test]
fn acr_import_copies_server_side_and_carries_every_attachment() {
    let acrs = Acrs::new();
    acrs.attach_everything();
    let imported = acrs.import(&acrs.prod, "acr-import", &[]).assert().success();
    let record = one(&imported);
    assert_eq!(record["image"], format!("{}/{REPO}", acrs.prod.host()));
    assert_eq!(record["digest"], acrs.image.digest.as_str());
    let event = last_event(&record);
    assert_eq!(event["via"], "acr-import", "{event}");
    assert!(!event["operationId"].as_str().unwrap_or("").is_empty(), "{event}");

    // One importImage, by digest, from dev's resource id, under the tag.
    let imports = acrs.arm.imports();
    assert_eq!(imports.len(), 1, "{imports:?}");
    assert_eq!(imports[0]["registry"], "prodacr");
    let body = &imports[0]["body"];
    assert_eq!(
        body["source"]["sourceImage"],
        format!("{REPO}@{}", acrs.image.digest)
    );
    assert_eq!(body["source"]["resourceId"], acrs.arm.registry_id("devacr"));
    assert_eq!(body["targetTags"], serde_json::json!([format!("{REPO}:{TAG}")]));
    assert_eq!(body["mode"], "NoForce");

    // The exact bytes, and everything the import dropped, carried.
    assert_eq!(
        images::sha256_digest(&images::inspect_raw(&acrs.prod, REPO, TAG)),
        acrs.image.digest
    );
    let attached: Vec<String> = event["attached"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert!(attached.iter().any(|a| a.ends_with(".sig")), "{attached:?}");
    assert!(attached.iter().any(|a| a.ends_with(".att")), "{attached:?}");
    assert!(
        attached.iter().any(|a| a.starts_with("referrer ")),
        "{attached:?}"
    );
    acrs.cosign_verifies_everything_at_prod();
    tool("os-verify")
        .arg("--key")
        .arg(acrs.public())
        .args(["--attestation", "slsaprovenance"])
        .write_stdin(stdout(&imported))
        .assert()
        .success();
}

#[test]
fn only_the_attachments_pass_through_the_agent() {
    let acrs = Acrs::new();
    acrs.attach_everything();
    // What a client copy sends: the image alone, and with its attachments.
    let image_only = TestRegistry::start();
    let everything = TestRegistry::start();
    let alone = acrs
        .import(&image_only, "copy", &["--no-signatures"])
        .assert()
        .success();
    let with_attachments = acrs.import(&everything, "copy", &[]).assert().success();
    let attachments = event_bytes(&with_attachments) - event_bytes(&alone);
    assert!(attachments > 0);

    let server_side = acrs.import(&acrs.prod, "acr-import", &[]).assert().success();
    assert_eq!(
        event_bytes(&server_side),
        attachments,
        "under acr-import only the attachments go through this process"
    );
}

#[test]
fn a_re_run_imports_nothing() {
    let acrs = Acrs::new();
    acrs.attach_everything();
    acrs.import(&acrs.prod, "acr-import", &[]).assert().success();
    let again = one(&acrs.import(&acrs.prod, "acr-import", &[]).assert().success());
    let event = last_event(&again);
    assert_eq!(event["via"], "acr-import");
    assert_eq!(event["operationId"], Value::Null, "{event}");
    assert_eq!(event["bytesThroughAgent"], 0, "{event}");
    assert_eq!(acrs.arm.imports().len(), 1, "the re-run asked ARM for nothing");
}

#[test]
fn a_moved_target_tag_is_refused_and_force_moves_it() {
    let acrs = Acrs::new();
    let other = images::single_arch(&acrs.home().join("other"), TAG, "other");
    images::push(&other, &acrs.prod, REPO, TAG);

    let refused = one(&acrs.import(&acrs.prod, "acr-import", &[]).assert().code(1));
    assert_eq!(refused["error"]["code"], "tag-conflict", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&other.digest)
    );
    assert!(acrs.arm.imports().is_empty(), "nothing was asked of ARM");
    assert_eq!(
        images::sha256_digest(&images::inspect_raw(&acrs.prod, REPO, TAG)),
        other.digest,
        "the tag stayed"
    );

    let forced = one(&acrs
        .import(&acrs.prod, "acr-import", &["--force"])
        .assert()
        .success());
    let event = last_event(&forced);
    assert_eq!(event["force"], true, "{event}");
    assert_eq!(event["movedTags"], serde_json::json!([TAG]));
    assert_eq!(acrs.arm.imports()[0]["body"]["mode"], "Force");
    assert_eq!(
        images::sha256_digest(&images::inspect_raw(&acrs.prod, REPO, TAG)),
        acrs.image.digest
    );
}

#[test]
fn a_failed_operation_leaves_no_tag_and_pushes_no_attachment() {
    let acrs = Acrs::new();
    acrs.attach_everything();
    acrs.arm.inject(Fault::FailMidway);
    let failed = one(&acrs.import(&acrs.prod, "acr-import", &[]).assert().code(1));
    assert_eq!(failed["error"]["code"], "import-failed", "{failed}");
    let tags = prod_tags(&acrs.prod);
    assert!(tags.is_empty(), "nothing tagged or attached at prod: {tags:?}");
}

#[test]
fn a_throttled_import_waits_as_asked_and_succeeds() {
    let acrs = Acrs::new();
    acrs.arm.inject(Fault::Throttle { retry_after_secs: 1 });
    acrs.arm.inject(Fault::ThrottlePoll);
    acrs.import(&acrs.prod, "acr-import", &[]).assert().success();
    let log = acrs.arm.requests();
    let throttled = log.iter().filter(|line| line.ends_with("-> 429")).count();
    assert_eq!(throttled, 2, "{log:#?}");
    assert_eq!(acrs.arm.imports().len(), 1);
}

#[test]
fn auto_copies_past_acrs_manifest_limit_and_acr_import_refuses() {
    let acrs = Acrs::new();
    // An index of 51 entries (one platform image listed again and again).
    let child = images::single_arch(&acrs.home().join("child"), "c", "child");
    images::push(&child, &acrs.dev, REPO, "child");
    let entry = serde_json::json!({
        "mediaType": images::OCI_MANIFEST,
        "digest": child.digest,
        "size": child.size,
        "platform": {"os": "linux", "architecture": "amd64"},
    });
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": images::OCI_INDEX,
        "manifests": vec![entry; 51],
    });
    let bytes = serde_json::to_vec(&index).unwrap();
    support::push::put_manifest(acrs.dev.host(), REPO, "big", images::OCI_INDEX, &bytes).unwrap();
    let record = stdout(
        &tool("os-digest")
            .arg(format!("{}/{REPO}:big", acrs.dev.host()))
            .assert()
            .success(),
    );

    // First under acr-import (the target stays empty), then under auto.
    let mut strict = acrs.import(&acrs.prod, "acr-import", &[]);
    let refused = one(&strict.write_stdin(record.clone()).assert().code(1));
    assert_eq!(refused["error"]["code"], "unsupported", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 50")
    );

    let mut auto = acrs.import(&acrs.prod, "auto", &[]);
    let copied = one(&auto.write_stdin(record).assert().success());
    let event = last_event(&copied);
    assert_eq!(event["via"], "copy", "{event}");
    assert!(
        event["viaReason"].as_str().unwrap().contains("at most 50"),
        "{event}"
    );
    assert!(event["bytesThroughAgent"].as_u64().unwrap() > 0, "{event}");
    assert!(acrs.arm.imports().is_empty());
}

#[test]
fn auto_copies_to_a_registry_the_subscription_does_not_have() {
    let acrs = Acrs::new();
    let elsewhere = TestRegistry::start();
    let copied = one(&acrs.import(&elsewhere, "auto", &[]).assert().success());
    let event = last_event(&copied);
    assert_eq!(event["via"], "copy");
    let reason = event["viaReason"].as_str().unwrap();
    assert!(reason.contains("not an Azure Container Registry"), "{reason}");

    let auto_into_prod = one(&acrs.import(&acrs.prod, "auto", &[]).assert().success());
    assert_eq!(last_event(&auto_into_prod)["via"], "acr-import");
}

#[test]
fn auto_without_a_subscription_copies_and_acr_import_refuses_to_start() {
    let acrs = Acrs::new();
    let mut auto = acrs.import(&acrs.prod, "auto", &[]);
    let copied = one(&auto.env_remove("AZURE_SUBSCRIPTION_ID").assert().success());
    let reason = last_event(&copied)["viaReason"].as_str().unwrap().to_string();
    assert!(reason.contains("AZURE_SUBSCRIPTION_ID"), "{reason}");

    let mut strict = acrs.import(&acrs.prod, "acr-import", &[]);
    let output = strict.env_remove("AZURE_SUBSCRIPTION_ID").assert().code(2);
    let stderr = String::from_utf8_lossy(&output.get_output().stderr);
    assert!(stderr.contains("--subscription"), "{stderr}");
}

#[test]
fn a_wrong_client_secret_is_a_clear_error_that_keeps_the_secret() {
    let acrs = Acrs::new();
    let mut command = acrs.import(&acrs.prod, "acr-import", &[]);
    let output = command
        .env("AZURE_CLIENT_SECRET", "not-the-secret-7f3a")
        .assert()
        .code(1);
    let record = one(&output);
    assert_eq!(record["error"]["code"], "unauthorized", "{record}");
    let everything = format!(
        "{}{}",
        String::from_utf8_lossy(&output.get_output().stdout),
        String::from_utf8_lossy(&output.get_output().stderr)
    );
    assert!(!everything.contains("not-the-secret-7f3a"), "{everything}");
}

#[test]
fn a_source_outside_the_subscription_is_named_by_host_with_its_credentials() {
    // Only prod is an ACR of the subscription: dev is reached by its
    // login server, with the docker config's credential for it.
    let dev = TestRegistry::start();
    let prod = TestRegistry::start();
    let arm = ArmStandIn::start(ArmConfig::new(vec![AcrEntry::new("prodacr", prod.host())]));
    let dir = tempfile::tempdir().unwrap();
    let image = images::single_arch(&dir.path().join("l"), TAG, "outside");
    images::push(&image, &dev, REPO, TAG);
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("puller:pull-s3cret-99");
    std::fs::write(
        dir.path().join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, dev.host()),
    )
    .unwrap();
    let record = stdout(
        &tool("os-digest")
            .arg(format!("{}/{REPO}:{TAG}", dev.host()))
            .assert()
            .success(),
    );
    let mut command = tool("os-import");
    command
        .args([
            "--to",
            &format!("{}/onestream", prod.host()),
            "--via",
            "acr-import",
        ])
        .args(["--arm-endpoint", &arm.endpoint()])
        .env("DOCKER_CONFIG", dir.path())
        .write_stdin(record);
    for (name, value) in arm.env() {
        command.env(name, value);
    }
    let output = command.assert().success();
    let source = &arm.imports()[0]["body"]["source"];
    assert_eq!(source["registryUri"], dev.host());
    assert!(source.get("resourceId").is_none(), "{source}");
    assert_eq!(source["credentials"]["username"], "puller");
    let printed = format!("{:?}", output.get_output());
    assert!(
        !printed.contains("pull-s3cret-99"),
        "the password stays out of the output"
    );
    assert_eq!(
        images::sha256_digest(&images::inspect_raw(&prod, REPO, TAG)),
        image.digest
    );
}

/// Every tag in prod's repository.
fn prod_tags(prod: &TestRegistry) -> Vec<String> {
    let answer =
        support::push::request(prod.host(), "GET", &format!("/v2/{REPO}/tags/list"), &[], &[]).unwrap();
    if answer.status == 404 {
        return Vec::new();
    }
    let body: Value = serde_json::from_slice(&answer.body).unwrap();
    body["tags"]
        .as_array()
        .map(|tags| tags.iter().map(|t| t.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// A re-run of an unsigned promotion: per image, one `HEAD` of the target
/// tag and one listing of the source's tags (the attachments' index); per
/// run, each host's `/v2/` and its Referrers API probe; nothing of ARM but
/// the token and the registry list.
#[test]
fn a_re_run_asks_two_requests_per_image_and_nothing_of_arm() {
    use support::fault_proxy::FaultProxy;
    // The agent reaches both registries through proxies that log every
    // request; the stand-in knows them by the proxies' hosts.
    let dev = TestRegistry::start();
    let prod = TestRegistry::start();
    let (dev_proxy, prod_proxy) = (FaultProxy::start(&dev), FaultProxy::start(&prod));
    let arm = ArmStandIn::start(ArmConfig::new(vec![
        AcrEntry::new("devacr", dev_proxy.host()),
        AcrEntry::new("prodacr", prod_proxy.host()),
    ]));
    let dir = tempfile::tempdir().unwrap();
    let services = ["iam", "auth", "billing"];
    let mut records = String::new();
    for service in services {
        let image = images::single_arch(&dir.path().join(service), TAG, service);
        images::push(&image, &dev, &format!("onestream/{service}"), TAG);
        records += &stdout(
            &tool("os-digest")
                .arg(format!("{}/onestream/{service}:{TAG}", dev_proxy.host()))
                .assert()
                .success(),
        );
    }
    let import = || {
        let mut command = tool("os-import");
        command
            .args([
                "--to",
                &format!("{}/onestream", prod_proxy.host()),
                "--via",
                "acr-import",
            ])
            .args(["--arm-endpoint", &arm.endpoint(), "--jobs", "1"])
            .write_stdin(records.clone());
        for (name, value) in arm.env() {
            command.env(name, value);
        }
        command.assert().success()
    };
    import();
    assert_eq!(arm.imports().len(), services.len());
    dev_proxy.clear_seen();
    prod_proxy.clear_seen();
    let before = arm.requests().len();
    import();
    let asked: Vec<String> = dev_proxy
        .seen()
        .iter()
        .chain(prod_proxy.seen().iter())
        .map(|seen| format!("{} {}", seen.method, seen.target))
        .collect();
    let per_run = asked
        .iter()
        .filter(|a| a.ends_with("/v2/") || a.contains("/referrers/") || a.contains("/manifests/sha256-"))
        .count();
    assert!(per_run <= 5, "{asked:#?}");
    assert_eq!(asked.len() - per_run, 2 * services.len(), "{asked:#?}");
    let arm_asked = &arm.requests()[before..];
    assert_eq!(
        arm_asked.len(),
        2,
        "a token and the registry list: {arm_asked:#?}"
    );
    assert_eq!(arm.imports().len(), services.len(), "no import asked again");
}

#[test]
fn a_source_with_exports_disabled_is_copied_under_auto_and_refused_under_acr_import() {
    let acrs = Acrs::with(|mut config| {
        config.registries[0].export_disabled = true;
        config
    });
    let refused = one(&acrs.import(&acrs.prod, "acr-import", &[]).assert().code(1));
    assert_eq!(refused["error"]["code"], "unsupported", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("devacr has exports disabled"), "{message}");

    let copied = one(&acrs.import(&acrs.prod, "auto", &[]).assert().success());
    let event = last_event(&copied);
    assert_eq!(event["via"], "copy", "{event}");
    assert!(
        event["viaReason"].as_str().unwrap().contains("exports disabled"),
        "{event}"
    );
    assert!(acrs.arm.imports().is_empty(), "ARM was asked for nothing");
}

#[test]
fn resource_manager_over_plain_http_is_refused_off_loopback() {
    let acrs = Acrs::new();
    let mut command = tool("os-import");
    command
        .args([
            "--to",
            &format!("{}/onestream", acrs.prod.host()),
            "--via",
            "acr-import",
        ])
        .args(["--arm-endpoint", "http://management.example.com"])
        .write_stdin(acrs.record());
    for (name, value) in acrs.arm.env() {
        command.env(name, value);
    }
    let output = command.assert().code(2);
    let stderr = String::from_utf8_lossy(&output.get_output().stderr);
    assert!(
        stderr.contains("--arm-endpoint") && stderr.contains("plain http only on loopback"),
        "{stderr}"
    );
}
