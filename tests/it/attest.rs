//! `os-sign attest` and `os-verify --attestation` against the real cosign
//! 2.5 in both directions (`cosign attest` / `cosign verify-attestation`,
//! offline), and the negative cases with their reasons.

use os_testkit as support;

use std::path::Path;

use serde_json::Value;
use support::bins::tool;
use support::cosign::{cosign, cosign_ok};
use support::schema::{one, stdout};

use crate::sign_verify::{PASSWORD, Setup, empty_trusted_root};

const PROVENANCE: &str = r#"{"buildDefinition":{"buildType":"https://onestream.dev/azure-pipelines/v1","externalParameters":{"repository":"https://dev.azure.com/onestream/iam"}},"runDetails":{"builder":{"id":"https://dev.azure.com/onestream/_build?definitionId=7"}}}"#;
const VULN: &str = r#"{"invocation":{"uri":"https://dev.azure.com/onestream/_build/results?buildId=42"},"scanner":{"uri":"pkg:github/aquasecurity/trivy@0.58.1","version":"0.58.1","result":{"SchemaVersion":2,"Results":[]}},"metadata":{"scanStartedOn":"2026-12-01T10:00:00Z","scanFinishedOn":"2026-12-01T10:00:05Z"}}"#;

fn attest(s: &Setup, key: &Path, kind: &str, predicate: &str, records: &str) -> assert_cmd::assert::Assert {
    attest_in(s, key, kind, predicate, records, "tag")
}

fn attest_in(
    s: &Setup,
    key: &Path,
    kind: &str,
    predicate: &str,
    records: &str,
    storage: &str,
) -> assert_cmd::assert::Assert {
    let file = s.path(&format!("{kind}.json"));
    std::fs::write(&file, predicate).unwrap();
    tool("os-sign")
        .args(["attest", "--storage", storage, "--type", kind, "--predicate"])
        .arg(&file)
        .arg("--key")
        .arg(key)
        .env("COSIGN_PASSWORD", PASSWORD)
        .write_stdin(records.to_string())
        .assert()
}

fn verify_attestation(s: &Setup, public: &Path, kind: &str, reference: &str) -> std::process::Output {
    let public = public.to_str().unwrap();
    cosign(
        &[
            "verify-attestation",
            "--key",
            public,
            "--insecure-ignore-tlog=true",
            "--allow-http-registry",
            "--type",
            kind,
            reference,
        ],
        PASSWORD,
        s.dir.path(),
    )
}

fn last_event(record: &Value) -> Value {
    record["history"].as_array().unwrap().last().unwrap().clone()
}

#[test]
fn os_sign_attest_verifies_with_cosign_verify_attestation_and_not_with_another_key() {
    let s = Setup::new();
    let (record, digest) = s.image("att/ours", "ours");
    let (key, public) = s.our_keys("ours");
    let (_, other_public) = s.cosign_keys("other");
    let attested = one(&attest(&s, &key, "slsaprovenance1", PROVENANCE, &record).success());
    let event = last_event(&attested);
    assert_eq!(event["step"], "attest");
    assert_eq!(event["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(event["storage"], "tag");
    assert_eq!(event["added"], true);

    let pinned = s.pinned("att/ours", &digest);
    let accepted = verify_attestation(&s, &public, "slsaprovenance1", &pinned);
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    let statement: Value = serde_json::from_slice(&base64_payload(
        String::from_utf8_lossy(&accepted.stdout).lines().next().unwrap(),
    ))
    .unwrap();
    assert_eq!(
        statement["subject"][0]["digest"]["sha256"],
        digest.trim_start_matches("sha256:")
    );
    assert_eq!(
        statement["predicate"]["runDetails"]["builder"]["id"],
        "https://dev.azure.com/onestream/_build?definitionId=7"
    );
    let refused = verify_attestation(&s, &other_public, "slsaprovenance1", &pinned);
    assert!(!refused.status.success(), "cosign refuses another key");

    // The same predicate again with the same key adds nothing.
    let again = one(&attest(&s, &key, "slsaprovenance1", PROVENANCE, &record).success());
    assert_eq!(last_event(&again)["added"], false);
    assert_eq!(last_event(&again)["attestation"], event["attestation"]);
}

/// The payload of the DSSE envelope cosign verify-attestation prints.
fn base64_payload(line: &str) -> Vec<u8> {
    use base64::Engine as _;
    let envelope: Value = serde_json::from_str(line).unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap()
}

/// `cosign attest --type vuln` of [`VULN`] with `key`, offline.
fn cosign_attest_vuln(s: &Setup, key: &Path, reference: &str, extra: &[&str]) {
    let predicate = s.path("vuln.json");
    std::fs::write(&predicate, VULN).unwrap();
    let (key, predicate) = (key.to_str().unwrap(), predicate.to_str().unwrap());
    let mut args = vec![
        "attest",
        "--yes",
        "--key",
        key,
        "--tlog-upload=false",
        "--allow-http-registry",
    ];
    args.extend_from_slice(extra);
    args.extend(["--type", "vuln", "--predicate", predicate, reference]);
    cosign_ok(&args, PASSWORD, s.dir.path());
}

#[test]
fn cosign_attest_verifies_with_os_verify_attestation_and_not_with_another_key() {
    let s = Setup::new();
    let (record, digest) = s.image("att/cosign", "cosign");
    let (cosign_key, cosign_public) = s.cosign_keys("signer");
    let (_, attester_public) = s.our_keys("attester");
    let pinned = s.pinned("att/cosign", &digest);
    s.cosign_sign(&cosign_key, &pinned, &[]);
    cosign_attest_vuln(&s, &cosign_key, &pinned, &[]);
    let verified = one(&s
        .verify(&cosign_public, &record, &["--attestation", "vuln"])
        .success());
    let checked = &last_event(&verified)["attestations"];
    assert_eq!(checked[0]["type"], "vuln", "{checked}");
    assert_eq!(
        checked[0]["predicateType"],
        "https://cosign.sigstore.dev/attestation/vuln/v1"
    );
    assert!(checked[0]["digest"].as_str().unwrap().starts_with("sha256:"));

    // Signed by the cosign key, attested by it: a second key that signs
    // nothing here cannot stand in for it.
    let both_keys = s.verify(
        &attester_public,
        &record,
        &["--key", cosign_public.to_str().unwrap(), "--attestation", "vuln"],
    );
    both_keys.success();
    let refused = one(&s
        .verify(&attester_public, &record, &["--attestation", "vuln"])
        .code(1));
    assert_eq!(refused["error"]["code"], "key-mismatch", "{refused}");
}

/// An image signed by `key`, with attestations by `attester`.
fn signed(s: &Setup, repo: &str) -> (String, String, std::path::PathBuf, std::path::PathBuf) {
    let (record, digest) = s.image(repo, repo);
    let (key, public) = s.our_keys(&repo.replace('/', "-"));
    let signed = stdout(&s.sign(&key, &record, &[]).success());
    (signed, digest, key, public)
}

#[test]
fn an_attestation_of_another_type_is_not_the_one_asked_for() {
    let s = Setup::new();
    let (record, _, key, public) = signed(&s, "att/types");
    attest(&s, &key, "spdxjson", r#"{"spdxVersion":"SPDX-2.3"}"#, &record).success();
    let refused = one(&s.verify(&public, &record, &["--attestation", "vuln"]).code(1));
    assert_eq!(refused["error"]["code"], "no-attestation", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("no vuln attestation"), "{message}");
    s.verify(&public, &record, &["--attestation", "spdxjson"])
        .success();
}

#[test]
fn an_attestation_whose_key_signed_another_statement_is_refused() {
    // Another image's attestation, copied under this one's .att tag: it
    // verifies with the key, but its subject is the other digest.
    let s = Setup::new();
    let (record, digest, key, public) = signed(&s, "att/subject");
    let (other, other_digest) = s.image("att/subject", "another");
    let other = stdout(&s.sign(&key, &other, &[]).success());
    attest(&s, &key, "vuln", VULN, &other).success();
    copy_att(&s, "att/subject", &other_digest, &digest, |envelope| {
        envelope.to_vec()
    });
    let refused = one(&s.verify(&public, &record, &["--attestation", "vuln"]).code(1));
    assert_eq!(refused["error"]["code"], "digest-mismatch", "{refused}");
}

#[test]
fn a_tampered_envelope_is_refused() {
    let s = Setup::new();
    let (record, digest, key, public) = signed(&s, "att/tamper");
    attest(&s, &key, "vuln", VULN, &record).success();
    // The same statement with one byte of the predicate changed.
    copy_att(&s, "att/tamper", &digest, &digest, |envelope| {
        use base64::Engine as _;
        let base64 = base64::engine::general_purpose::STANDARD;
        let mut parsed: Value = serde_json::from_slice(envelope).unwrap();
        let payload = String::from_utf8(base64.decode(parsed["payload"].as_str().unwrap()).unwrap()).unwrap();
        let tampered = payload.replace("0.58.1", "0.58.2");
        assert_ne!(payload, tampered);
        parsed["payload"] = base64.encode(tampered).into();
        serde_json::to_vec(&parsed).unwrap()
    });
    let refused = one(&s.verify(&public, &record, &["--attestation", "vuln"]).code(1));
    assert_eq!(refused["error"]["code"], "key-mismatch", "{refused}");
}

/// Rewrites `to`'s `.att` manifest to hold `from`'s first envelope, changed
/// by `change`.
fn copy_att(s: &Setup, repo: &str, from: &str, to: &str, change: impl Fn(&[u8]) -> Vec<u8>) {
    copy_att_between(s, (repo, repo), from, to, change)
}

/// [`copy_att`] from one repository to another.
fn copy_att_between(
    s: &Setup,
    (repo, to_repo): (&str, &str),
    from: &str,
    to: &str,
    change: impl Fn(&[u8]) -> Vec<u8>,
) {
    use support::push::{put_manifest, request, upload_blob};
    let host = s.registry.host();
    let tag = |digest: &str| format!("{}.att", digest.replace(':', "-"));
    let accept = [("Accept", "application/vnd.oci.image.manifest.v1+json")];
    let manifest = request(
        host,
        "GET",
        &format!("/v2/{repo}/manifests/{}", tag(from)),
        &accept,
        &[],
    )
    .unwrap();
    assert_eq!(manifest.status, 200);
    let mut manifest: Value = serde_json::from_slice(&manifest.body).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_string();
    let envelope = request(host, "GET", &format!("/v2/{repo}/blobs/{layer}"), &[], &[]).unwrap();
    let changed = change(&envelope.body);
    upload_blob(host, to_repo, &changed).unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap().to_string();
    let config = request(host, "GET", &format!("/v2/{repo}/blobs/{config}"), &[], &[]).unwrap();
    upload_blob(host, to_repo, &config.body).unwrap();
    manifest["layers"][0]["digest"] = support::images::sha256_digest(&changed).into();
    manifest["layers"][0]["size"] = changed.len().into();
    let bytes = serde_json::to_vec(&manifest).unwrap();
    put_manifest(
        host,
        to_repo,
        &tag(to),
        "application/vnd.oci.image.manifest.v1+json",
        &bytes,
    )
    .unwrap();
}

#[test]
fn a_predicate_from_stdin_is_refused_because_stdin_carries_the_records() {
    let s = Setup::new();
    let (key, _) = s.our_keys("stdin");
    let output = tool("os-sign")
        .args(["attest", "--type", "vuln", "--predicate", "-", "--key"])
        .arg(&key)
        .env("COSIGN_PASSWORD", PASSWORD)
        .write_stdin("")
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&output.get_output().stderr);
    assert!(stderr.contains("stdin carries the records"), "{stderr}");
}

fn verify_bundle_attestation(s: &Setup, public: &Path, kind: &str, reference: &str) -> std::process::Output {
    let trusted_root = empty_trusted_root(s);
    cosign(
        &[
            "verify-attestation",
            "--new-bundle-format",
            "--trusted-root",
            trusted_root.to_str().unwrap(),
            "--key",
            public.to_str().unwrap(),
            "--insecure-ignore-tlog=true",
            "--allow-http-registry",
            "--type",
            kind,
            reference,
        ],
        PASSWORD,
        s.dir.path(),
    )
}

#[test]
fn a_bundle_attestation_from_os_sign_verifies_with_cosign_and_os_verify() {
    let s = Setup::new();
    let (record, digest, key, public) = signed(&s, "att/bundle");
    let (_, other_public) = s.cosign_keys("stranger");
    let attested = one(&attest_in(&s, &key, "slsaprovenance1", PROVENANCE, &record, "referrers").success());
    let event = last_event(&attested);
    assert_eq!(event["storage"], "referrers", "{event}");
    assert_eq!(event["added"], true);
    let pinned = s.pinned("att/bundle", &digest);
    let accepted = verify_bundle_attestation(&s, &public, "slsaprovenance1", &pinned);
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    assert!(
        !verify_bundle_attestation(&s, &other_public, "slsaprovenance1", &pinned)
            .status
            .success()
    );

    let verified = one(&s
        .verify(&public, &record, &["--attestation", "slsaprovenance1"])
        .success());
    let checked = &last_event(&verified)["attestations"][0];
    assert_eq!(
        checked["predicateType"], "https://slsa.dev/provenance/v1",
        "{checked}"
    );
    assert_eq!(
        format!(
            "{}@{}",
            s.pinned("att/bundle", "").trim_end_matches('@'),
            checked["digest"].as_str().unwrap()
        ),
        event["attestation"].as_str().unwrap(),
        "the referrer os-sign wrote is the one accepted"
    );
    let again = one(&attest_in(&s, &key, "slsaprovenance1", PROVENANCE, &record, "referrers").success());
    assert_eq!(last_event(&again)["added"], false);
}

#[test]
fn a_bundle_attestation_from_cosign_verifies_with_os_verify_and_not_another_key() {
    let s = Setup::new();
    let (record, digest) = s.image("att/cosign-bundle", "cosign-bundle");
    let (cosign_key, cosign_public) = s.cosign_keys("bundler");
    let (_, other_public) = s.our_keys("not-the-bundler");
    let pinned = s.pinned("att/cosign-bundle", &digest);
    s.cosign_sign(&cosign_key, &pinned, &[]);
    cosign_attest_vuln(&s, &cosign_key, &pinned, &["--new-bundle-format"]);
    let verified = one(&s
        .verify(&cosign_public, &record, &["--attestation", "vuln"])
        .success());
    assert_eq!(last_event(&verified)["attestations"][0]["type"], "vuln");
    let both = ["--key", other_public.to_str().unwrap(), "--attestation", "vuln"];
    s.verify(&cosign_public, &record, &both).success();
    // The signature is cosign's too, so another key alone fails there
    // first; with the signature's key given, the attestation must still
    // verify with one of them: here only cosign's does.
    let refused = one(&s
        .verify(&other_public, &record, &["--attestation", "vuln"])
        .code(1));
    assert_eq!(refused["error"]["code"], "key-mismatch", "{refused}");
}

fn trivy(name: &str) -> String {
    let path = support::bins::workspace_root()
        .join("tests/fixtures/trivy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// cosign's own gate on the same report: a CUE policy allowing no
/// CRITICAL finding, as `cosign verify-attestation --type vuln --policy`.
fn cosign_allows_no_critical(s: &Setup, public: &Path, reference: &str) -> bool {
    let policy = s.path("no-critical.cue");
    std::fs::write(
        &policy,
        "predicate: scanner: result: Results: [...{Vulnerabilities?: [...{Severity: !=\"CRITICAL\"}]}]\n",
    )
    .unwrap();
    let output = cosign(
        &[
            "verify-attestation",
            "--key",
            public.to_str().unwrap(),
            "--insecure-ignore-tlog=true",
            "--allow-http-registry",
            "--type",
            "vuln",
            "--policy",
            policy.to_str().unwrap(),
            reference,
        ],
        PASSWORD,
        s.dir.path(),
    );
    output.status.success()
}

#[test]
fn a_trivy_report_gates_on_severity_as_cosigns_cue_policy_does() {
    let s = Setup::new();
    let (record, digest, key, public) = signed(&s, "att/trivy");
    let attested = one(&attest(&s, &key, "vuln", &trivy("fluentd-gems.json"), &record).success());
    assert_eq!(
        last_event(&attested)["predicateType"],
        "https://cosign.sigstore.dev/attestation/vuln/v1"
    );
    let pinned = s.pinned("att/trivy", &digest);

    // The report has a CRITICAL finding: both gates refuse it.
    assert!(!cosign_allows_no_critical(&s, &public, &pinned));
    let refused = one(&s
        .verify(
            &public,
            &record,
            &["--attestation", "vuln", "--fail-on-severity", "critical"],
        )
        .code(1));
    assert_eq!(refused["error"]["code"], "attestation-policy", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("CVE-2019-18224 (CRITICAL) in"), "{message}");

    // An accepted risk lets it through, and the event says which.
    let accepted = one(&s
        .verify(
            &public,
            &record,
            &[
                "--attestation",
                "vuln",
                "--fail-on-severity",
                "CRITICAL",
                "--ignore-vuln",
                "CVE-2019-18224",
            ],
        )
        .success());
    let checked = &last_event(&accepted)["attestations"][0];
    assert_eq!(
        checked["ignoredVulns"],
        serde_json::json!(["CVE-2019-18224"]),
        "{checked}"
    );
    // HIGH is next: CVE-2020-8165 in a gem.
    let high = one(&s
        .verify(
            &public,
            &record,
            &[
                "--attestation",
                "vuln",
                "--fail-on-severity",
                "high",
                "--ignore-vuln",
                "CVE-2019-18224",
            ],
        )
        .code(1));
    assert!(
        high["error"]["message"]
            .as_str()
            .unwrap()
            .contains("CVE-2020-8165 (HIGH)"),
        "{high}"
    );
}

#[test]
fn a_report_with_no_critical_passes_both_gates() {
    let s = Setup::new();
    let (record, digest, key, public) = signed(&s, "att/clean");
    attest(&s, &key, "vuln", &trivy("distroless-python27.json"), &record).success();
    assert!(cosign_allows_no_critical(
        &s,
        &public,
        &s.pinned("att/clean", &digest)
    ));
    s.verify(
        &public,
        &record,
        &["--attestation", "vuln", "--fail-on-severity", "critical"],
    )
    .success();
    // Its MEDIUM finding has no fix yet: --ignore-unfixed leaves only LOW.
    s.verify(
        &public,
        &record,
        &["--attestation", "vuln", "--fail-on-severity", "medium"],
    )
    .code(1);
    s.verify(
        &public,
        &record,
        &[
            "--attestation",
            "vuln",
            "--fail-on-severity",
            "medium",
            "--ignore-unfixed",
        ],
    )
    .success();
}

#[test]
fn a_trivy_report_of_another_image_is_refused_at_attest() {
    let s = Setup::new();
    let (record, _, key, _) = signed(&s, "att/elsewhere");
    let refused = one(&attest(&s, &key, "vuln", &trivy("alpine-310-registry.json"), &record).code(1));
    assert_eq!(refused["error"]["code"], "digest-mismatch", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("localhost:55844/alpine@sha256:b1c5a500"),
        "{message}"
    );
}

#[test]
fn an_old_scan_is_refused_by_max_scan_age() {
    let s = Setup::new();
    let (record, _, key, public) = signed(&s, "att/old");
    let date = std::process::Command::new("date")
        .args(["-u", "-d", "2 days ago", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    let finished = String::from_utf8(date.stdout).unwrap().trim().to_string();
    let predicate = VULN.replace("2026-12-01T10:00:05Z", &finished);
    attest(&s, &key, "vuln", &predicate, &record).success();
    let refused = one(&s
        .verify(
            &public,
            &record,
            &["--attestation", "vuln", "--max-scan-age", "1d"],
        )
        .code(1));
    assert_eq!(refused["error"]["code"], "attestation-policy", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--max-scan-age")
    );
    s.verify(
        &public,
        &record,
        &["--attestation", "vuln", "--max-scan-age", "7d"],
    )
    .success();
}

#[test]
fn vuln_rules_without_a_vuln_attestation_are_a_usage_error() {
    let s = Setup::new();
    let (record, _, _, public) = signed(&s, "att/usage");
    let output = s
        .verify(&public, &record, &["--fail-on-severity", "high"])
        .code(2);
    let stderr = String::from_utf8_lossy(&output.get_output().stderr);
    assert!(stderr.contains("add --attestation vuln"), "{stderr}");
}

const AZURE_RUN: [(&str, &str); 9] = [
    ("TF_BUILD", "True"),
    ("SYSTEM_COLLECTIONURI", "https://dev.azure.com/onestream/"),
    ("SYSTEM_TEAMPROJECT", "platform"),
    ("BUILD_DEFINITIONNAME", "iam-ci"),
    ("SYSTEM_DEFINITIONID", "7"),
    ("BUILD_BUILDID", "4242"),
    (
        "BUILD_REPOSITORY_URI",
        "https://dev.azure.com/onestream/platform/_git/iam",
    ),
    ("BUILD_SOURCEVERSION", "9f1e2d3c4b5a69788796a5b4c3d2e1f009182736"),
    ("BUILD_SOURCEBRANCH", "refs/heads/main"),
];
const AZURE_BUILDER: &str = "https://dev.azure.com/onestream/platform/_build?definitionId=7";

fn provenance_from_ci(
    s: &Setup,
    key: &Path,
    records: &str,
    env: &[(&str, &str)],
) -> assert_cmd::assert::Assert {
    let mut command = tool("os-sign");
    command
        .args(["attest", "--type", "slsaprovenance1", "--key"])
        .arg(key)
        .env("COSIGN_PASSWORD", PASSWORD)
        .env("HOME", s.dir.path())
        .write_stdin(records.to_string());
    for variable in [
        "SYSTEM_COLLECTIONURI",
        "SYSTEM_TEAMPROJECT",
        "BUILD_DEFINITIONNAME",
        "SYSTEM_DEFINITIONID",
    ] {
        command.env_remove(variable);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command.assert()
}

#[test]
fn provenance_built_from_azure_pipelines_verifies_with_cosign_and_pins_the_builder_and_commit() {
    let s = Setup::new();
    let (record, digest, key, public) = signed(&s, "att/provenance");
    let attested = one(&provenance_from_ci(&s, &key, &record, &AZURE_RUN).success());
    assert_eq!(
        last_event(&attested)["predicateType"],
        "https://slsa.dev/provenance/v1"
    );
    let accepted = verify_attestation(
        &s,
        &public,
        "slsaprovenance1",
        &s.pinned("att/provenance", &digest),
    );
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    let statement: Value = serde_json::from_slice(&base64_payload(
        String::from_utf8_lossy(&accepted.stdout).lines().next().unwrap(),
    ))
    .unwrap();
    let predicate = &statement["predicate"];
    assert_eq!(predicate["runDetails"]["builder"]["id"], AZURE_BUILDER);
    assert_eq!(
        predicate["buildDefinition"]["resolvedDependencies"][0]["digest"]["gitCommit"],
        "9f1e2d3c4b5a69788796a5b4c3d2e1f009182736"
    );

    let pinned_builder = [
        "--attestation",
        "slsaprovenance1",
        "--provenance-builder",
        AZURE_BUILDER,
    ];
    s.verify(&public, &record, &pinned_builder).success();
    let other_builder = [
        "--attestation",
        "slsaprovenance1",
        "--provenance-builder",
        "https://ci.example.com/evil",
    ];
    let refused = one(&s.verify(&public, &record, &other_builder).code(1));
    assert_eq!(refused["error"]["code"], "attestation-policy", "{refused}");

    // A record claiming another commit than the provenance's is refused.
    let mut claimed: Value = serde_json::from_str(record.trim()).unwrap();
    claimed["source"] = serde_json::json!({"commit": "1111111111111111111111111111111111111111"});
    let refused = one(&s
        .verify(
            &public,
            &format!("{claimed}\n"),
            &["--attestation", "slsaprovenance1"],
        )
        .code(1));
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("built from commit 9f1e2d3c"), "{message}");
}

#[test]
fn provenance_outside_ci_without_a_predicate_names_what_is_missing() {
    let s = Setup::new();
    let (record, _, key, _) = signed(&s, "att/no-ci");
    let failed = one(&provenance_from_ci(&s, &key, &record, &[]).code(1));
    assert_eq!(failed["error"]["code"], "missing-field", "{failed}");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("BUILD_BUILDID") && message.contains("--predicate"),
        "{message}"
    );
}

#[test]
fn an_attestation_naming_another_repository_fails_the_identity_rule() {
    // The same image in two repositories; the attestation made in one is
    // copied under the other's .att tag: it names the first.
    let s = Setup::new();
    let (record_a, digest, key, public) = signed(&s, "att/id-a");
    attest(&s, &key, "vuln", VULN, &record_a).success();
    let (record_b, digest_b) = s.image("att/id-b", "att/id-a");
    assert_eq!(digest, digest_b, "the same image");
    let record_b = stdout(&s.sign(&key, &record_b, &[]).success());
    copy_att_between(&s, ("att/id-a", "att/id-b"), &digest, &digest, |envelope| {
        envelope.to_vec()
    });
    let refused = one(&s.verify(&public, &record_b, &["--attestation", "vuln"]).code(1));
    assert_eq!(refused["error"]["code"], "identity-mismatch", "{refused}");
    s.verify(
        &public,
        &record_b,
        &["--attestation", "vuln", "--identity", "any"],
    )
    .success();
}
