//! os-import between real registries and OCI layouts, with signatures,
//! attestations and OCI 1.1 referrers made by the real cosign, verified at
//! the target by the real cosign and by os-verify.

use os_testkit as support;

use std::path::PathBuf;

use serde_json::Value;
use support::bins::tool;
use support::cosign::cosign_ok;
use support::fault_proxy::{Fault, FaultProxy};
use support::images;
use support::registry::TestRegistry;
use support::schema::{one, records, stdout};

const PASSWORD: &str = "import-test";

fn last_event(record: &Value) -> Value {
    record["history"].as_array().unwrap().last().unwrap().clone()
}

struct Keys {
    key: PathBuf,
    public: PathBuf,
}

fn keys(dir: &std::path::Path) -> Keys {
    let prefix = dir.join("k");
    cosign_ok(
        &[
            "generate-key-pair",
            "--output-key-prefix",
            prefix.to_str().unwrap(),
        ],
        PASSWORD,
        dir,
    );
    Keys {
        key: dir.join("k.key"),
        public: dir.join("k.pub"),
    }
}

#[test]
fn promotion_carries_signatures_attestations_and_referrers_and_keeps_digests() {
    let dev = TestRegistry::start();
    let prod = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let keys = keys(home);
    let multi = images::multi_arch(&dir.path().join("l"), "2.0", "promote");
    images::push(&multi, &dev, "onestream/iam", "2.0");
    let reference = format!("{}/onestream/iam@{}", dev.host(), multi.digest);
    // Everything a team attaches today, made by the real cosign.
    let key = keys.key.to_str().unwrap();
    cosign_ok(
        &[
            "sign",
            "--yes",
            "--key",
            key,
            "--tlog-upload=false",
            "--allow-http-registry",
            &reference,
        ],
        PASSWORD,
        home,
    );
    // A platform image signed on its own (per-platform signatures).
    let child = multi.manifest()["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let child_reference = format!("{}/onestream/iam@{child}", dev.host());
    cosign_ok(
        &[
            "sign",
            "--yes",
            "--key",
            key,
            "--tlog-upload=false",
            "--allow-http-registry",
            &child_reference,
        ],
        PASSWORD,
        home,
    );
    let predicate = dir.path().join("provenance.json");
    std::fs::write(
        &predicate,
        r#"{"buildType":"https://ci.example.com/build/v1","builder":{"id":"https://ci.example.com"}}"#,
    )
    .unwrap();
    cosign_ok(
        &[
            "attest",
            "--yes",
            "--key",
            key,
            "--tlog-upload=false",
            "--allow-http-registry",
            "--type",
            "slsaprovenance",
            "--predicate",
            predicate.to_str().unwrap(),
            &reference,
        ],
        PASSWORD,
        home,
    );
    let sbom = dir.path().join("sbom.spdx.json");
    std::fs::write(&sbom, r#"{"spdxVersion":"SPDX-2.3","name":"iam"}"#).unwrap();
    cosign_ok(
        &[
            "attach",
            "sbom",
            "--sbom",
            sbom.to_str().unwrap(),
            "--type",
            "spdx",
            "--allow-http-registry",
            &reference,
        ],
        PASSWORD,
        home,
    );
    cosign_ok(
        &[
            "sign",
            "--yes",
            "--key",
            key,
            "--tlog-upload=false",
            "--allow-http-registry",
            "--registry-referrers-mode=oci-1-1",
            "-a",
            "via=referrer",
            &reference,
        ],
        PASSWORD,
        home,
    );

    let record = stdout(
        &tool("os-digest")
            .arg(format!("{}/onestream/iam:2.0", dev.host()))
            .assert()
            .success(),
    );
    let imported = tool("os-import")
        .args(["--to", &format!("{}/onestream", prod.host())])
        .write_stdin(record)
        .assert()
        .success();
    let promoted = one(&imported);
    assert_eq!(promoted["image"], format!("{}/onestream/iam", prod.host()));
    assert_eq!(promoted["digest"], multi.digest.as_str());
    let event = last_event(&promoted);
    assert_eq!(event["step"], "import");
    assert_eq!(event["sourceReferrers"], "tag-fallback");
    assert_eq!(
        event["targetReferrers"], "tag-fallback",
        "distribution 2.8 has no Referrers API"
    );
    let attached: Vec<String> = event["attached"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    for suffix in [".sig", ".att", ".sbom"] {
        assert!(
            attached.iter().any(|a| a.ends_with(suffix)),
            "{suffix} carried: {attached:?}"
        );
    }
    assert!(
        attached.iter().any(|a| a.starts_with("referrer ")),
        "{attached:?}"
    );
    assert!(event["blobsCopied"].as_u64().unwrap() > 0);

    // Same digest at prod, per the peer; the tag came along.
    assert_eq!(
        images::sha256_digest(&images::inspect_raw(&prod, "onestream/iam", "2.0")),
        multi.digest
    );
    // cosign at the target: signature, attestation, referrer signature.
    let at_prod = format!("{}/onestream/iam@{}", prod.host(), multi.digest);
    let public = keys.public.to_str().unwrap();
    cosign_ok(
        &[
            "verify",
            "--key",
            public,
            "--insecure-ignore-tlog=true",
            "--allow-http-registry",
            &at_prod,
        ],
        PASSWORD,
        home,
    );
    cosign_ok(
        &[
            "verify-attestation",
            "--key",
            public,
            "--insecure-ignore-tlog=true",
            "--allow-http-registry",
            "--type",
            "slsaprovenance",
            &at_prod,
        ],
        PASSWORD,
        home,
    );
    cosign_ok(
        &[
            "verify",
            "--key",
            public,
            "--insecure-ignore-tlog=true",
            "--allow-http-registry",
            "--experimental-oci11",
            "-a",
            "via=referrer",
            &at_prod,
        ],
        PASSWORD,
        home,
    );
    // Each platform image's own signature came along.
    cosign_ok(
        &[
            "verify",
            "--key",
            public,
            "--insecure-ignore-tlog=true",
            "--allow-http-registry",
            &format!("{}/onestream/iam@{child}", prod.host()),
        ],
        PASSWORD,
        home,
    );
    // os-verify at the target, in the pipe.
    tool("os-verify")
        .arg("--key")
        .arg(&keys.public)
        .write_stdin(stdout(&imported))
        .assert()
        .success();

    // A second import sends nothing.
    let again = one(&tool("os-import")
        .args(["--to", &format!("{}/onestream", prod.host())])
        .write_stdin(stdout(
            &tool("os-digest")
                .arg(format!("{}/onestream/iam:2.0", dev.host()))
                .assert()
                .success(),
        ))
        .assert()
        .success());
    let event = last_event(&again);
    assert_eq!(event["bytes"], 0, "{event}");
    assert_eq!(event["blobsCopied"], 0, "{event}");
}

#[test]
fn same_registry_promotion_mounts_instead_of_copying() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = images::single_arch(&dir.path().join("l"), "1", "mount");
    images::push(&image, &registry, "dev/app", "1");
    let record = stdout(
        &tool("os-digest")
            .arg(format!("{}/dev/app:1", registry.host()))
            .assert()
            .success(),
    );
    let promoted = one(&tool("os-import")
        .args(["--to-repo", &format!("{}/prod/app", registry.host())])
        .write_stdin(record)
        .assert()
        .success());
    let event = last_event(&promoted);
    assert_eq!(event["bytes"], 0, "{event}");
    assert!(event["blobsMounted"].as_u64().unwrap() >= 3, "{event}");
    assert_eq!(
        images::sha256_digest(&images::inspect_raw(&registry, "prod/app", "1")),
        image.digest
    );
}

#[test]
fn layout_to_registry_to_layout_round_trips_byte_identical() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let build = dir.path().join("build");
    let image = images::multi_arch(&build, "1.0", "roundtrip");
    // Push what the build produced.
    let pushed = one(&tool("os-import")
        .args(["--to", &format!("{}/onestream", registry.host())])
        .arg(format!("oci:{}:1.0", build.display()))
        .assert()
        .success());
    assert_eq!(pushed["image"], format!("{}/onestream/build", registry.host()));
    assert_eq!(pushed["digest"], image.digest.as_str());
    assert_eq!(
        images::sha256_digest(&images::inspect_raw(&registry, "onestream/build", "1.0")),
        image.digest
    );
    // Export for an air-gapped site, then compare every blob.
    let airgap = dir.path().join("airgap");
    let exported = one(&tool("os-import")
        .args(["--to", &format!("oci:{}", airgap.display())])
        .write_stdin(serde_json::to_string(&pushed).unwrap() + "\n")
        .assert()
        .success());
    assert_eq!(exported["digest"], image.digest.as_str());
    for entry in std::fs::read_dir(build.join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        let copied = airgap.join("blobs/sha256").join(entry.file_name());
        assert_eq!(
            std::fs::read(entry.path()).unwrap(),
            std::fs::read(&copied).unwrap(),
            "{}",
            copied.display()
        );
    }
    // The peer reads the export.
    let output = std::process::Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:1.0", airgap.display()))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(images::sha256_digest(&output.stdout), image.digest);
}

#[test]
fn bad_input_becomes_error_records() {
    let registry = TestRegistry::start();
    let missing = format!(
        "{{\"image\":\"{}/nothing/here\",\"digest\":\"sha256:{}\"}}\n{{\"image\":\"{}/x\"}}\n",
        registry.host(),
        "ab".repeat(32),
        registry.host()
    );
    let output = tool("os-import")
        .args(["--to", &format!("{}/prod", registry.host())])
        .write_stdin(missing)
        .assert()
        .code(1);
    let out = records(&output.get_output().stdout);
    assert_eq!(out[0]["error"]["code"], "not-found");
    assert_eq!(out[1]["error"]["code"], "missing-field");
    tool("os-import")
        .args(["--to", "not a registry"])
        .write_stdin("")
        .assert()
        .code(2);
}

#[test]
fn platform_subset_needs_consent_and_makes_a_new_index_of_the_same_children() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let multi = images::multi_arch(&dir.path().join("l"), "3.0", "platforms");
    images::push(&multi, &registry, "dev/edge", "3.0");
    let reference = format!("{}/dev/edge@{}", registry.host(), multi.digest);
    let amd64_child = multi.manifest()["manifests"][0].clone();
    assert_eq!(amd64_child["platform"]["architecture"], "amd64");

    // Without the consent flag clap refuses before anything is copied.
    tool("os-import")
        .args(["--to-repo", &format!("{}/prod/edge", registry.host())])
        .args(["--platform", "linux/amd64"])
        .arg(&reference)
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--allow-digest-change"));

    let narrowed = one(&tool("os-import")
        .args(["--to-repo", &format!("{}/prod/edge", registry.host())])
        .args([
            "--platform",
            "linux/amd64",
            "--allow-digest-change",
            "--tag",
            "amd64",
        ])
        .arg(&reference)
        .assert()
        .success());
    let new_digest = narrowed["digest"].as_str().unwrap().to_string();
    assert_ne!(new_digest, multi.digest);
    assert_eq!(narrowed["platforms"], serde_json::json!(["linux/amd64"]));
    let event = last_event(&narrowed);
    assert_eq!(event["sourceDigest"], multi.digest.as_str());
    let pushed = images::inspect_raw(&registry, "prod/edge", "amd64");
    assert_eq!(images::sha256_digest(&pushed), new_digest);
    let index: Value = serde_json::from_slice(&pushed).unwrap();
    assert_eq!(
        index["manifests"],
        serde_json::json!([amd64_child]),
        "the child is carried unchanged"
    );
    // The arm64 child was not copied.
    let arm64 = multi.manifest()["manifests"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let status = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/prod/edge@{arm64}", registry.host()))
        .output()
        .unwrap();
    assert!(!status.status.success(), "arm64 must not be at the target");

    // An arm64 request without the variant matches linux/arm64/v8.
    let arm = one(&tool("os-import")
        .args(["--to-repo", &format!("{}/prod/edge-arm", registry.host())])
        .args(["--platform", "linux/arm64", "--allow-digest-change"])
        .arg(&reference)
        .assert()
        .success());
    assert_eq!(arm["platforms"], serde_json::json!(["linux/arm64/v8"]));

    // Every platform asked for: nothing to narrow, the digest is kept.
    let all = one(&tool("os-import")
        .args(["--to-repo", &format!("{}/prod/edge-all", registry.host())])
        .args([
            "--platform",
            "linux/amd64",
            "--platform",
            "linux/arm64/v8",
            "--allow-digest-change",
        ])
        .arg(&reference)
        .assert()
        .success());
    assert_eq!(all["digest"], multi.digest.as_str());

    // A platform the index does not have is an error record listing what it has.
    let missing = tool("os-import")
        .args(["--to-repo", &format!("{}/prod/edge-s390x", registry.host())])
        .args(["--platform", "linux/s390x", "--allow-digest-change"])
        .arg(&reference)
        .assert()
        .code(1);
    let record = one(&missing);
    assert_eq!(record["error"]["code"], "not-found");
    let message = record["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("linux/s390x") && message.contains("linux/arm64/v8"),
        "{message}"
    );
}

#[test]
fn progress_is_drawn_on_a_terminal_and_nowhere_else() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = images::single_arch(&dir.path().join("l"), "1", "progress");
    let source = format!("oci:{}:1", image.layout_dir.display());
    // Not a terminal (a pipeline log): stderr stays empty on success.
    tool("os-import")
        .args(["--to", &format!("{}/quiet", registry.host())])
        .arg(&source)
        .assert()
        .success()
        .stderr("");
    // On a terminal (script(1) gives the tool a pseudo-terminal), one line
    // per record shows where it went and what moved (wide, so the line is
    // not cut to the terminal's width).
    let command = format!(
        "stty rows 50 cols 250; {} --to {}/tty {}",
        support::bins::bin("os-import").display(),
        registry.host(),
        source
    );
    let output = std::process::Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let screen = String::from_utf8_lossy(&output.stdout);
    assert!(
        screen.contains(&format!(
            "-> {}/tty/l: 3 blobs copied, 0 mounted, 0 skipped",
            registry.host()
        )),
        "{screen}"
    );
}

#[test]
fn blobs_shared_across_repositories_are_sent_once_then_mounted_at_the_target() {
    let dev = TestRegistry::start();
    let prod = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    // Two services built on the same layers (here: the same image) in two
    // repositories of dev.
    let image = images::single_arch(&dir.path().join("l"), "1", "shared-base");
    images::push(&image, &dev, "team/svc1", "1");
    images::push(&image, &dev, "team/svc2", "1");
    let records = stdout(
        &tool("os-digest")
            .arg(format!("{}/team/svc1:1", dev.host()))
            .arg(format!("{}/team/svc2:1", dev.host()))
            .assert()
            .success(),
    );
    // Imported concurrently (the default --jobs): one of them sends each
    // blob, the other waits for it and mounts it.
    let output = tool("os-import")
        .args(["--to", prod.host()])
        .write_stdin(records.clone())
        .assert()
        .success();
    let promoted = records_of(&output);
    let counter = |name: &str| -> u64 {
        promoted
            .iter()
            .map(|r| last_event(r)[name].as_u64().unwrap())
            .sum()
    };
    assert_eq!(counter("blobsCopied"), 3, "{promoted:?}");
    assert_eq!(counter("blobsMounted"), 3, "{promoted:?}");
    // A blob known to have landed in the other repository is mounted
    // straight away: each blob is asked for once, by the record sending it.
    let blob_heads = prod
        .requests()
        .iter()
        .filter(|r| r.starts_with("HEAD ") && r.contains("/blobs/"))
        .count();
    assert_eq!(blob_heads, 3, "{:?}", prod.requests());
    for repository in ["team/svc1", "team/svc2"] {
        assert_eq!(
            images::sha256_digest(&images::inspect_raw(&prod, repository, "1")),
            image.digest
        );
    }
    // Promoting again finds everything: nothing is sent, nothing written.
    let asked_before = [dev.requests().len(), prod.requests().len()];
    let again = records_of(
        &tool("os-import")
            .args(["--to", prod.host()])
            .write_stdin(records)
            .assert()
            .success(),
    );
    for record in &again {
        let event = last_event(record);
        assert_eq!(
            (
                event["bytes"].as_u64(),
                event["manifests"].as_u64(),
                event["blobsCopied"].as_u64()
            ),
            (Some(0), Some(0), Some(0)),
            "{event}"
        );
    }
    // Both records reach the attachments at once; neither registry has the
    // Referrers API, and one question to each settles that for the run.
    for (registry, before) in [&dev, &prod].into_iter().zip(asked_before) {
        let requests = registry.requests()[before..].to_vec();
        let probes = requests.iter().filter(|r| r.contains("/referrers/")).count();
        assert_eq!(probes, 1, "{requests:?}");
    }
}

/// An image in a dev registry, signed by os-sign with a fresh key pair
/// (`key` and `key.pub` beside each other) in each storage given.
struct SignedImage {
    dev: TestRegistry,
    repository: String,
    image: images::TestImage,
    key: PathBuf,
    _dir: tempfile::TempDir,
}

impl SignedImage {
    fn new(repository: &str, tag: &str, storages: &[&str]) -> SignedImage {
        let dev = TestRegistry::start();
        let dir = tempfile::tempdir().unwrap();
        let image = images::single_arch(&dir.path().join("l"), tag, repository);
        images::push(&image, &dev, repository, tag);
        let prefix = dir.path().join("k");
        tool("os-sign")
            .args(["generate-key-pair", "--output-key-prefix"])
            .arg(&prefix)
            .env("COSIGN_PASSWORD", PASSWORD)
            .assert()
            .success();
        let signed = SignedImage {
            dev,
            repository: repository.to_string(),
            image,
            key: prefix.with_extension("key"),
            _dir: dir,
        };
        let mut records = signed.record_at(signed.dev.host());
        for storage in storages {
            records = stdout(
                &tool("os-sign")
                    .args(["--storage", storage, "--key"])
                    .arg(&signed.key)
                    .env("COSIGN_PASSWORD", PASSWORD)
                    .write_stdin(records)
                    .assert()
                    .success(),
            );
        }
        signed
    }

    /// os-digest's record for the image's tag at `host` (dev, or a proxy).
    fn record_at(&self, host: &str) -> String {
        stdout(
            &tool("os-digest")
                .arg(format!("{host}/{}:{}", self.repository, self.image.tag))
                .assert()
                .success(),
        )
    }
}

#[test]
fn a_promotion_writes_each_manifest_once_and_a_re_run_only_asks() {
    // Signed both ways: a .sig tag and a Sigstore bundle as an OCI 1.1
    // referrer (through the tag-fallback index on this registry).
    let signed = SignedImage::new("onestream/auth", "1.0", &["tag", "referrers"]);
    let (dev, image) = (&signed.dev, &signed.image);
    let prod = TestRegistry::start();
    let digested = signed.record_at(dev.host());
    let import = || {
        one(&tool("os-import")
            .args(["--to", &format!("{}/onestream", prod.host())])
            .write_stdin(digested.clone())
            .assert()
            .success())
    };
    let hex = image.digest.trim_start_matches("sha256:");
    let manifest_puts = |requests: &[String]| -> Vec<String> {
        let mut puts: Vec<String> = requests
            .iter()
            .filter(|r| r.starts_with("PUT ") && r.contains("/manifests/"))
            .map(|r| r.rsplit('/').next().unwrap().to_string())
            .collect();
        puts.sort();
        puts
    };

    let first = import();
    let attached = last_event(&first)["attached"].as_array().unwrap().len();
    assert_eq!(attached, 2, "{first}");
    let requests = prod.requests();
    // Each manifest is pushed once: the image and the signature under their
    // tags (one PUT stores and tags), the referrer by digest, then the
    // fallback index that lists it.
    let puts = manifest_puts(&requests);
    assert_eq!(puts.len(), 4, "{puts:?}");
    assert!(puts.contains(&"1.0".to_string()), "{puts:?}");
    assert!(puts.contains(&format!("sha256-{hex}.sig")), "{puts:?}");
    assert!(puts.contains(&format!("sha256-{hex}")), "{puts:?}");
    assert!(
        !puts.contains(&image.digest),
        "the image was pushed twice: {puts:?}"
    );
    // Asked before writing: the image's tag, then its digest; the .sig and
    // fallback tags; and, listed again after writing, the two attachments.
    // A referrer the target has no fallback index for is not asked for.
    let heads = requests
        .iter()
        .filter(|r| r.starts_with("HEAD ") && r.contains("/manifests/"))
        .count();
    assert_eq!(heads, 6, "{requests:?}");

    // Promoting again only asks: the image's tag, the signature's tag and
    // the fallback index's tag, one request each, and writes nothing.
    let before = requests.len();
    let again = import();
    assert_eq!(
        last_event(&again)["attached"].as_array().unwrap().len(),
        2,
        "{again}"
    );
    let requests = prod.requests()[before..].to_vec();
    let writes: Vec<&String> = requests
        .iter()
        .filter(|r| !r.starts_with("HEAD ") && !r.starts_with("GET "))
        .collect();
    assert!(writes.is_empty(), "a re-run wrote: {writes:?}");
    let mut manifests: Vec<String> = requests
        .iter()
        .filter(|r| r.contains("/manifests/"))
        .map(|r| r.rsplit('/').next().unwrap().to_string())
        .collect();
    manifests.sort();
    assert_eq!(
        manifests,
        vec![
            "1.0".to_string(),
            format!("sha256-{hex}"),
            format!("sha256-{hex}.sig")
        ],
        "{requests:?}"
    );
}

/// Debian's registry has no Referrers API, so a proxy in front of it plays
/// one that does, for one image: it answers `GET /v2/<repo>/referrers/<digest>`
/// with the index such a registry serves, and hides the `sha256-<hex>` tag
/// (a client that found the API writes none).
#[test]
fn referrers_a_source_lists_through_its_api_reach_targets_without_it() {
    let signed = SignedImage::new("onestream/api", "3.1", &["referrers"]);
    let (dev, image) = (&signed.dev, &signed.image);
    let prod = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let hex = image.digest.trim_start_matches("sha256:");
    let fallback_tag = format!("sha256-{hex}");
    let listed = images::inspect_raw(dev, "onestream/api", &fallback_tag);
    let referrer = serde_json::from_slice::<Value>(&listed).unwrap()["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();

    let api = FaultProxy::start(dev);
    api.add(Fault::answer(
        "GET",
        &format!("/v2/onestream/api/referrers/{}", image.digest),
        200,
        "application/vnd.oci.image.index.v1+json",
        &listed,
    ));
    api.add(Fault::status("*", &format!("/v2/onestream/api/manifests/{fallback_tag}"), 404).exact());
    let record = signed.record_at(api.host());
    let verify = |records: String, offline: Option<&std::path::Path>| {
        let mut verify = tool("os-verify");
        verify.arg("--key").arg(signed.key.with_extension("pub"));
        if let Some(layout) = offline {
            verify.arg("--offline").arg(layout);
        }
        one(&verify.write_stdin(records).assert().success())
    };

    // To a registry without the API: the referrer, and a fallback index
    // listing it, so readers there find it.
    let imported = tool("os-import")
        .args(["--to", &format!("{}/onestream", prod.host())])
        .write_stdin(record.clone())
        .assert()
        .success();
    let event = last_event(&one(&imported));
    assert_eq!(event["sourceReferrers"], "referrers-api", "{event}");
    assert_eq!(event["targetReferrers"], "tag-fallback", "{event}");
    let at_prod: Value =
        serde_json::from_slice(&images::inspect_raw(&prod, "onestream/api", &fallback_tag)).unwrap();
    assert_eq!(at_prod["manifests"][0]["digest"], referrer.as_str(), "{at_prod}");
    let verified = verify(stdout(&imported), None);
    assert_eq!(last_event(&verified)["verified"], true, "{verified}");

    // To an OCI layout (an air-gapped export): the same, verified offline.
    let layout = dir.path().join("airgap");
    let exported = tool("os-import")
        .arg("--to")
        .arg(format!("oci:{}", layout.display()))
        .write_stdin(record)
        .assert()
        .success();
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .collect();
    assert!(names.contains(&fallback_tag.as_str()), "{index}");
    let verified = verify(stdout(&exported), Some(&layout));
    assert_eq!(last_event(&verified)["verified"], true, "{verified}");
}

fn records_of(output: &assert_cmd::assert::Assert) -> Vec<Value> {
    records(&output.get_output().stdout)
}
