//! os-deploy end to end: rendering golden manifests, kustomize equality
//! with `kubectl kustomize`, apply through a stand-in kubectl (no API server
//! can run here), GitOps commits on real git repositories, the gate, and
//! bad input. One test goes through the real os-digest | os-sign |
//! os-verify pipe against a real registry.

use os_testkit as support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use support::bins::tool;
use support::images;
use support::registry::TestRegistry;
use support::schema::{records, stdout};

const IAM_DIGEST: &str = "sha256:d457e3a99392a03f47057f50ac1cbc5d0365131575477971bf85177a0c0fed22";
const NGINX_DIGEST: &str = "sha256:5be1ecc7935f1dd85635d4feedaf660594030253cc97c9e9ca3819ffeac36b65";
const REPORTS_DIGEST: &str = "sha256:7f26104f77a7ce477546cd1ea99b6c99b5eb079e3ec9238583314eccea00440a";
const OLD_IAM_DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const KEY_ID: &str = "sha256:b33b0000000000000000000000000000000000000000000000000000000000ff";

const IAM: &str = "prod.example.com/onestream/iam";
const NGINX: &str = "mirror.example.com/library/nginx";
const REPORTS: &str = "localhost:5000/onestream/reports";

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/k8s")
        .join(path)
}

/// kubectl renders kustomize directories; these tests need the real one
/// (installed by scripts/setup), and fail loudly without it.
fn kubectl() -> &'static str {
    static INSTALLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        Command::new("kubectl")
            .args(["version", "--client"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    assert!(
        installed,
        "kubectl is not installed: kustomize directories and these tests need it; run scripts/setup"
    );
    "kubectl"
}

/// A record as os-digest | os-sign | os-import | os-verify leave it: the
/// verify event in the exact shape os-verify writes (no `digest` field: the
/// signature tag names the digest).
fn verified(service: &str, image: &str, digest: &str) -> Value {
    let mut record = unverified(service, image, digest);
    record["history"].as_array_mut().unwrap().push(json!({
        "step": "verify",
        "tool": "os-verify 0.1.0",
        "at": "2026-11-25T10:04:00Z",
        "image": image,
        "keyId": KEY_ID,
        "signature": format!("{image}:{}.sig@sha256:{}", digest.replace(':', "-"), "ab".repeat(32)),
        "identity": image.replace("prod.example.com", "dev.example.com"),
        "verified": true
    }));
    record
}

/// The same record before os-verify: digest, sign and import events only.
fn unverified(service: &str, image: &str, digest: &str) -> Value {
    let dev = image.replace("prod.example.com", "dev.example.com");
    json!({
        "service": service,
        "image": image,
        "digest": digest,
        "tag": "1.4.2",
        "team": {"cost-center": 4711},
        "source": {"commit": "9f1e2d3c4b5a69788796a5b4c3d2e1f009182736", "repository": "https://dev.azure.com/onestream/iam", "run": "20261125.3"},
        "history": [
            {"step": "digest", "tool": "os-digest 0.1.0", "at": "2026-11-25T10:01:02Z", "image": dev, "tag": "1.4.2"},
            {"step": "sign", "tool": "os-sign 0.1.0", "at": "2026-11-25T10:02:00Z", "signer": "azurekms://onestream-kv.vault.azure.net/cosign", "keyId": KEY_ID, "signature": format!("{dev}:{}.sig", digest.replace(':', "-"))},
            {"step": "import", "tool": "os-import 0.1.0", "at": "2026-11-25T10:03:00Z", "from": dev, "to": image}
        ]
    })
}

fn lines(records: &[Value]) -> String {
    records.iter().map(|r| format!("{r}\n")).collect()
}

/// The three records that pin every image of the fixtures.
fn all_three() -> Vec<Value> {
    vec![
        verified("iam", IAM, IAM_DIGEST),
        verified("nginx", NGINX, NGINX_DIGEST),
        verified("reports", REPORTS, REPORTS_DIGEST),
    ]
}

fn last_event(record: &Value) -> &Value {
    record["history"].as_array().unwrap().last().unwrap()
}

struct Run {
    output: std::process::Output,
    records: Vec<Value>,
}

impl Run {
    fn code(&self) -> i32 {
        self.output.status.code().unwrap()
    }
    fn stdout(&self) -> String {
        String::from_utf8(self.output.stdout.clone()).unwrap()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
}

/// `os-deploy render ARGS` with `input` on stdin; the records from
/// --records-out, schema-checked.
fn render(args: &[&str], input: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let records_file = dir.path().join("records.json");
    let output = tool("os-deploy")
        .arg("render")
        .args(args)
        .arg("--records-out")
        .arg(&records_file)
        .write_stdin(input.to_string())
        .output()
        .unwrap();
    let written = std::fs::read(&records_file).unwrap_or_default();
    Run {
        output,
        records: records(&written),
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

// --- render ------------------------------------------------------------------

#[test]
fn render_pins_every_workload_image_and_keeps_the_rest_byte_for_byte() {
    let dir = fixture("iam");
    let run = render(&[path_str(&dir)], &lines(&all_three()));
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let golden = std::fs::read_to_string(fixture("iam.golden.yaml")).unwrap();
    assert_eq!(run.stdout(), golden);

    // Only the image scalars changed: every other line, comments included,
    // is the input's, in order.
    let input = format!(
        "{}{}",
        std::fs::read_to_string(dir.join("deployment.yaml")).unwrap(),
        std::fs::read_to_string(dir.join("jobs.yml")).unwrap()
    );
    let (before, after): (Vec<&str>, Vec<&str>) = (input.lines().collect(), golden.lines().collect());
    assert_eq!(before.len(), after.len());
    let changed: Vec<(&str, &str)> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b != a)
        .map(|(b, a)| (*b, *a))
        .collect();
    assert_eq!(changed.len(), 5, "{changed:#?}");
    for (b, a) in &changed {
        assert!(b.trim_start().starts_with("image:"), "{b}");
        assert!(a.contains("@sha256:"), "{a}");
    }
    // The env value that only looks like an image is data.
    assert!(golden.contains("value: \"image: not-an-image:1.0\""));

    // Same input, same bytes.
    let again = render(&[path_str(&dir)], &lines(&all_three()));
    assert_eq!(again.stdout(), golden);

    // Records: passed through with every field, plus one deploy event.
    assert_eq!(run.records.len(), 3);
    let iam = &run.records[0];
    assert_eq!(iam["team"]["cost-center"], 4711);
    let event = last_event(iam);
    assert_eq!(event["step"], "deploy");
    assert_eq!(event["mode"], "render");
    assert_eq!(event["image"], format!("{IAM}@{IAM_DIGEST}"));
    assert_eq!(event["verified"], true);
    assert_eq!(event["output"], "stdout");
    assert!(event.get("allowUnverified").is_none());
    assert_eq!(
        event["workloads"],
        json!([
            {"kind": "Deployment", "name": "iam", "container": "migrate", "previous": "dev.example.com/onestream/iam:1.4.2", "namespace": "iam"},
            {"kind": "Deployment", "name": "iam", "container": "iam", "previous": "dev.example.com/onestream/iam:1.4.2", "namespace": "iam"}
        ])
    );
    // A Docker Hub short name matched the mirror's library/nginx.
    assert_eq!(
        last_event(&run.records[1])["workloads"][0]["previous"],
        "nginx:1.27"
    );
    // A registry host with a port, in a CronJob's init and main containers.
    let reports: Vec<&str> = last_event(&run.records[2])["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["kind"].as_str().unwrap())
        .collect();
    assert_eq!(reports, ["CronJob", "CronJob"]);
}

#[test]
fn render_out_dir_writes_one_file_per_input() {
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("pinned");
    let run = render(
        &[path_str(&fixture("iam")), "--out", path_str(&target)],
        &lines(&all_three()),
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(run.stdout(), "");
    let deployment = std::fs::read_to_string(target.join("deployment.yaml")).unwrap();
    let jobs = std::fs::read_to_string(target.join("jobs.yml")).unwrap();
    assert_eq!(
        format!("{deployment}{jobs}"),
        std::fs::read_to_string(fixture("iam.golden.yaml")).unwrap()
    );
    assert_eq!(last_event(&run.records[0])["output"], path_str(&target));
}

#[test]
fn kustomize_output_equals_kubectl_kustomize_with_the_same_images_set() {
    let kubectl = kubectl();
    let run = render(&[path_str(&fixture("kustomize-iam"))], &lines(&all_three()));
    assert_eq!(run.code(), 0, "{}", run.stderr());

    // The peer: the same directory with kustomize's own images: transformer.
    let copy = tempfile::tempdir().unwrap();
    for file in ["kustomization.yaml", "deployment.yaml", "cronjob.yaml"] {
        std::fs::copy(fixture("kustomize-iam").join(file), copy.path().join(file)).unwrap();
    }
    let kustomization = copy.path().join("kustomization.yaml");
    let mut text = std::fs::read_to_string(&kustomization).unwrap();
    text.push_str(&format!(
        "images:\n- name: dev.example.com/onestream/iam\n  newName: {IAM}\n  digest: {IAM_DIGEST}\n\
         - name: nginx\n  newName: {NGINX}\n  digest: {NGINX_DIGEST}\n\
         - name: {REPORTS}\n  digest: {REPORTS_DIGEST}\n"
    ));
    std::fs::write(&kustomization, text).unwrap();
    let peer = Command::new(kubectl)
        .arg("kustomize")
        .arg(copy.path())
        .output()
        .unwrap();
    assert!(peer.status.success(), "{}", String::from_utf8_lossy(&peer.stderr));
    assert_eq!(run.stdout(), String::from_utf8(peer.stdout).unwrap());
    assert!(run.stdout().contains(&format!("{IAM}@{IAM_DIGEST}")));

    let event = last_event(&run.records[0]);
    // Object names as kustomize rendered them (namePrefix applied).
    assert_eq!(event["workloads"][0]["name"], "prod-iam");
}

#[test]
fn map_flag_matches_a_container_whatever_its_image_says() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("pod.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: iam\nspec:\n  containers:\n  - name: api\n    image: legacy/identity-service:7 # renamed long ago\n",
    )
    .unwrap();
    let input = lines(&[verified("iam", IAM, IAM_DIGEST)]);

    let unmapped = render(&[path_str(&manifest)], &input);
    assert_eq!(unmapped.code(), 1);
    assert_eq!(unmapped.stdout(), "");
    assert_eq!(unmapped.records[0]["error"]["code"], "no-match");
    assert!(
        unmapped
            .stderr()
            .contains("container \"api\": legacy/identity-service:7 is not pinned"),
        "{}",
        unmapped.stderr()
    );

    let mapped = render(&[path_str(&manifest), "--map", "api=iam"], &input);
    assert_eq!(mapped.code(), 0, "{}", mapped.stderr());
    assert_eq!(
        mapped.stdout(),
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: iam\nspec:\n  containers:\n  - name: api\n    image: {IAM}@{IAM_DIGEST} # renamed long ago\n"
        )
    );
}

#[test]
fn unpinned_images_left_are_named_by_file_object_and_container_unless_allowed() {
    let input = lines(&[verified("iam", IAM, IAM_DIGEST)]);
    let file = fixture("iam/deployment.yaml");
    let run = render(&[path_str(&file)], &input);
    assert_eq!(run.code(), 1);
    assert_eq!(run.stdout(), "", "nothing may be rendered");
    let message = run.records[0]["error"]["message"].as_str().unwrap();
    assert_eq!(run.records[0]["error"]["code"], "unpinned-image");
    assert!(
        message.contains(&format!(
            "{}:38: Deployment/iam (namespace iam) container \"proxy\": nginx:1.27 is not pinned by digest",
            file.display()
        )),
        "{message}"
    );
    assert!(run.stderr().contains("not pinned by digest"), "{}", run.stderr());

    let allowed = render(&[path_str(&file), "--no-require-digest"], &input);
    assert_eq!(allowed.code(), 0, "{}", allowed.stderr());
    assert!(
        allowed
            .stdout()
            .contains("image: nginx:1.27  # Docker Hub short name")
    );
}

// --- the gate and bad input -----------------------------------------------

#[test]
fn an_unverified_record_is_refused_and_nothing_is_rendered() {
    let mut input = all_three();
    input[1] = unverified("nginx", NGINX, NGINX_DIGEST);
    let run = render(&[path_str(&fixture("iam"))], &lines(&input));
    assert_eq!(run.code(), 1);
    assert_eq!(run.stdout(), "");
    assert_eq!(run.records.len(), 3);
    assert_eq!(run.records[1]["error"]["code"], "unverified");
    let message = run.records[1]["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("stdin line 2: ") && message.contains("no verify event"),
        "{message}"
    );
    // The others were fine, and still not deployed.
    for index in [0, 2] {
        assert_eq!(run.records[index]["error"]["code"], "batch-refused");
        assert_eq!(last_event(&run.records[index])["step"], "verify");
    }
}

#[test]
fn a_verification_of_another_place_or_digest_does_not_count() {
    // Verified in staging, then imported to prod: not verified where it is.
    let mut moved = verified("iam", "staging.example.com/onestream/iam", IAM_DIGEST);
    moved["image"] = IAM.into();
    let run = render(&[path_str(&fixture("iam"))], &lines(&[moved]));
    assert_eq!(run.code(), 1);
    let message = run.records[0]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("verified at staging.example.com/onestream/iam"),
        "{message}"
    );

    // A record whose digest was edited after verification.
    let mut edited = verified("iam", IAM, OLD_IAM_DIGEST);
    edited["digest"] = IAM_DIGEST.into();
    let run = render(&[path_str(&fixture("iam"))], &lines(&[edited]));
    assert_eq!(run.code(), 1);
    assert_eq!(run.records[0]["error"]["code"], "unverified");
    assert!(
        run.records[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another digest")
    );

    // A verify event that says it failed.
    let mut failed = verified("iam", IAM, IAM_DIGEST);
    let last = failed["history"].as_array_mut().unwrap().last_mut().unwrap();
    last["verified"] = false.into();
    let run = render(&[path_str(&fixture("iam"))], &lines(&[failed]));
    assert_eq!(run.records[0]["error"]["code"], "unverified");
}

#[test]
fn allow_unverified_is_loud_and_recorded() {
    let mut input = all_three();
    input[0] = unverified("iam", IAM, IAM_DIGEST);
    let run = render(&[path_str(&fixture("iam")), "--allow-unverified"], &lines(&input));
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert!(
        run.stderr().contains("WARNING: stdin line 1: ") && run.stderr().contains("is NOT verified"),
        "{}",
        run.stderr()
    );
    let event = last_event(&run.records[0]);
    assert_eq!(event["verified"], false);
    assert_eq!(event["allowUnverified"], true);
    // A verified record under the same flag says so too.
    assert_eq!(last_event(&run.records[1])["verified"], true);
    assert_eq!(last_event(&run.records[1])["allowUnverified"], true);
}

#[test]
fn a_batch_holding_an_error_record_deploys_nothing_and_passes_it_through() {
    let mut input = all_three();
    let mut failed = unverified("auth", "prod.example.com/onestream/auth", OLD_IAM_DIGEST);
    failed["error"] =
        json!({"step": "verify", "code": "key-mismatch", "message": "stdin line 4: no signature verifies"});
    input.push(failed.clone());
    let run = render(&[path_str(&fixture("iam"))], &lines(&input));
    assert_eq!(run.code(), 1);
    assert_eq!(run.stdout(), "");
    assert_eq!(
        run.records[3], failed,
        "an upstream error record passes untouched"
    );
    for record in &run.records[..3] {
        assert_eq!(record["error"]["code"], "batch-refused");
        assert!(
            record["error"]["message"]
                .as_str()
                .unwrap()
                .contains("1 error record(s) from an earlier step")
        );
    }
}

#[test]
fn a_record_that_matches_no_image_fails_the_batch() {
    let mut input = all_three();
    input.push(verified(
        "auth",
        "prod.example.com/onestream/auth",
        OLD_IAM_DIGEST,
    ));
    let run = render(&[path_str(&fixture("iam"))], &lines(&input));
    assert_eq!(run.code(), 1);
    assert_eq!(run.stdout(), "");
    assert_eq!(run.records[3]["error"]["code"], "no-match");
    assert!(
        run.records[3]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("prod.example.com/onestream/auth matches no container image in")
    );
    assert_eq!(run.records[0]["error"]["code"], "batch-refused");
}

#[test]
fn two_records_pinning_one_image_differently_conflict() {
    let mut input = all_three();
    input.push(verified("iam-hotfix", IAM, OLD_IAM_DIGEST));
    let run = render(&[path_str(&fixture("iam"))], &lines(&input));
    assert_eq!(run.code(), 1);
    assert_eq!(run.records[0]["error"]["code"], "conflicting-records");
    assert_eq!(run.records[3]["error"]["code"], "conflicting-records");
}

#[test]
fn yaml_that_does_not_parse_is_named_by_file_and_line() {
    let file = fixture("broken/deployment.yaml");
    let run = render(&[path_str(&fixture("broken"))], &lines(&all_three()));
    assert_eq!(run.code(), 2);
    assert_eq!(run.stdout(), "");
    let expected = format!("{}:11:", file.display());
    assert!(run.stderr().contains(&expected), "{}", run.stderr());
    assert_eq!(run.records[0]["error"]["code"], "bad-manifest");
    assert!(
        run.records[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&expected)
    );
}

#[test]
fn a_kustomize_directory_kubectl_cannot_render_is_bad_input() {
    kubectl();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        "resources:\n  - missing.yaml\n",
    )
    .unwrap();
    let run = render(&[path_str(dir.path())], &lines(&all_three()));
    assert_eq!(run.code(), 2);
    assert_eq!(run.stdout(), "");
    assert_eq!(run.records[0]["error"]["code"], "bad-manifest");
    let message = run.records[0]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("kubectl kustomize") && message.contains("missing.yaml"),
        "{message}"
    );
}

#[test]
fn unreadable_records_and_empty_input_are_usage_errors() {
    let run = render(
        &[path_str(&fixture("iam"))],
        &format!("{}{{not json\n", lines(&all_three())),
    );
    assert_eq!(run.code(), 2);
    assert_eq!(run.stdout(), "");
    assert_eq!(run.records[3]["error"]["code"], "malformed-input");
    assert!(
        run.records[3]["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("stdin line 4: ")
    );

    let run = render(&[path_str(&fixture("iam"))], "");
    assert_eq!(run.code(), 2);
    assert!(run.stderr().contains("no records on stdin"), "{}", run.stderr());
}

// --- the real pipe --------------------------------------------------------

#[test]
fn the_real_pipe_deploys_what_it_verified_and_refuses_what_it_did_not() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = images::single_arch(&dir.path().join("layout-iam"), "1", "iam");
    images::push(&image, &registry, "onestream/iam", "1");
    let unsigned = images::single_arch(&dir.path().join("layout-auth"), "1", "auth");
    images::push(&unsigned, &registry, "onestream/auth", "1");
    let host = registry.host();

    let digested = tool("os-digest")
        .args(["--service-from-repo"])
        .arg(format!("{host}/onestream/iam:1"))
        .assert()
        .success();
    let prefix = dir.path().join("cosign");
    tool("os-sign")
        .args(["generate-key-pair", "--output-key-prefix"])
        .arg(&prefix)
        .env("COSIGN_PASSWORD", "pw")
        .assert()
        .success();
    let signed = tool("os-sign")
        .arg("--key")
        .arg(prefix.with_extension("key"))
        .env("COSIGN_PASSWORD", "pw")
        .write_stdin(stdout(&digested))
        .assert()
        .success();
    let unsigned_record = tool("os-digest")
        .arg(format!("{host}/onestream/auth:1"))
        .assert()
        .success();
    let verify = |input: String| {
        tool("os-verify")
            .arg("--key")
            .arg(prefix.with_extension("pub"))
            .write_stdin(input)
            .output()
            .unwrap()
    };
    let verified = verify(stdout(&signed));
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );

    let manifest = dir.path().join("iam.yaml");
    std::fs::write(
        &manifest,
        format!(
            "# from the service repo\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: iam\nspec:\n  template:\n    spec:\n      containers:\n      - name: iam\n        image: {host}/onestream/iam:1\n"
        ),
    )
    .unwrap();
    let run = render(
        &[path_str(&manifest)],
        &String::from_utf8(verified.stdout.clone()).unwrap(),
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert!(
        run.stdout()
            .contains(&format!("image: {host}/onestream/iam@{}\n", image.digest))
    );
    let event = last_event(&run.records[0]);
    assert_eq!(event["step"], "deploy");
    assert_eq!(
        event["workloads"][0]["previous"],
        format!("{host}/onestream/iam:1")
    );

    // The tamper case: an unsigned image in the same batch. os-verify turns
    // it into an error record, and os-deploy then deploys nothing at all.
    let both = format!("{}{}", stdout(&signed), stdout(&unsigned_record));
    let verified_both = verify(both);
    assert_eq!(verified_both.status.code(), Some(1));
    let run = render(
        &[path_str(&manifest), "--no-require-digest"],
        &String::from_utf8(verified_both.stdout).unwrap(),
    );
    assert_eq!(run.code(), 1);
    assert_eq!(run.stdout(), "");
    assert_eq!(run.records[0]["error"]["code"], "batch-refused");
    assert_eq!(run.records[1]["error"]["step"], "verify");
}

// --- apply through a stand-in kubectl --------------------------------------

/// A stand-in for kubectl: logs every call's arguments (and the stdin of
/// apply) to $STANDIN_LOG, answers `get` with $STANDIN_LIVE, and plays back
/// the rollout outcome in $STANDIN_ROLLOUT: ok, fail, timeout (kubectl's
/// own message when --timeout passes) or hang (never answers).
const STANDIN: &str = r#"#!/bin/sh
printf 'ARGS %s\n' "$*" >> "$STANDIN_LOG"
case "$*" in
  *"config current-context"*) echo aks-prod-weu ;;
  *"apply --server-side"*)
    echo '--- STDIN' >> "$STANDIN_LOG"; cat >> "$STANDIN_LOG"; echo '--- END' >> "$STANDIN_LOG"
    if [ "${STANDIN_APPLY:-ok}" = fail ]; then
      echo 'Error from server (Forbidden): deployments.apps "iam" is forbidden' >&2; exit 1
    fi
    echo 'deployment.apps/iam serverside-applied' ;;
  "get "*|*" get "*) cat "$STANDIN_LIVE" ;;
  *"rollout status"*)
    case "$STANDIN_ROLLOUT" in
      ok) echo 'deployment "iam" successfully rolled out' ;;
      fail) echo 'error: deployment "iam" exceeded its progress deadline' >&2; exit 1 ;;
      timeout) echo 'error: timed out waiting for the condition' >&2; exit 1 ;;
      hang) exec sleep 120 ;;
    esac ;;
  *"rollout undo"*) echo 'deployment.apps/iam rolled back' ;;
  *) echo "stand-in kubectl: unexpected call: $*" >&2; exit 3 ;;
esac
"#;

struct StandIn {
    dir: tempfile::TempDir,
}

impl StandIn {
    fn new(live: &Value) -> StandIn {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("kubectl");
        std::fs::write(&script, STANDIN).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("live.json"), live.to_string()).unwrap();
        std::fs::write(dir.path().join("log"), "").unwrap();
        StandIn { dir }
    }

    fn apply(&self, rollout: &str, extra: &[&str], input: &str) -> Run {
        let output = tool("os-deploy")
            .arg("apply")
            .arg(fixture("iam"))
            .args(["--namespace", "iam", "--kubectl"])
            .arg(self.dir.path().join("kubectl"))
            .args(extra)
            .env("STANDIN_LOG", self.dir.path().join("log"))
            .env("STANDIN_LIVE", self.dir.path().join("live.json"))
            .env("STANDIN_ROLLOUT", rollout)
            .write_stdin(input.to_string())
            .output()
            .unwrap();
        let records = records(&output.stdout);
        Run { output, records }
    }

    /// The calls, one `ARGS …` line each (apply's stdin left out).
    fn calls(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap();
        log.lines()
            .filter_map(|l| l.strip_prefix("ARGS ").map(str::to_string))
            .collect()
    }

    fn applied(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap();
        let start = log.find("--- STDIN\n").expect("apply got stdin") + "--- STDIN\n".len();
        let end = log.find("--- END\n").unwrap();
        log[start..end].to_string()
    }
}

/// The cluster before the change: iam runs the old digest.
fn live_iam() -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": [{
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "iam", "namespace": "iam"},
        "spec": {"template": {"spec": {
            "initContainers": [{"name": "migrate", "image": format!("{IAM}@{OLD_IAM_DIGEST}")}],
            "containers": [
                {"name": "iam", "image": format!("{IAM}@{OLD_IAM_DIGEST}")},
                {"name": "proxy", "image": format!("{NGINX}@{NGINX_DIGEST}")}
            ]
        }}}
    }]})
}

#[test]
fn apply_applies_server_side_then_waits_for_each_rollout() {
    let standin = StandIn::new(&live_iam());
    let run = standin.apply("ok", &["--context", "aks-prod-weu"], &lines(&all_three()));
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(
        standin.calls(),
        [
            "--context aks-prod-weu get --namespace iam deployment/iam cronjob/access-review --ignore-not-found --output json",
            "--context aks-prod-weu apply --server-side --field-manager os-deploy --namespace iam --filename -",
            "--context aks-prod-weu rollout status deployment/iam --namespace iam --timeout=300s",
        ]
    );
    // What was applied is exactly what render writes.
    assert_eq!(
        standin.applied(),
        std::fs::read_to_string(fixture("iam.golden.yaml")).unwrap()
    );
    assert_eq!(run.records.len(), 3);
    let event = last_event(&run.records[0]);
    assert_eq!(event["mode"], "apply");
    assert_eq!(event["context"], "aks-prod-weu");
    assert_eq!(event["namespace"], "iam");
    assert_eq!(event["result"], "rolled-out");
    // The previous digest is what the cluster ran, not what the file said.
    assert_eq!(
        event["workloads"][1]["previous"],
        format!("{IAM}@{OLD_IAM_DIGEST}")
    );
    // The CronJob did not exist yet.
    assert_eq!(
        last_event(&run.records[2])["workloads"][0]["previous"],
        Value::Null
    );
}

#[test]
fn apply_without_context_records_the_current_one_and_honours_timeout() {
    let standin = StandIn::new(&live_iam());
    let run = standin.apply("ok", &["--timeout", "90s"], &lines(&all_three()));
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let calls = standin.calls();
    assert_eq!(calls[0], "config current-context");
    assert_eq!(
        calls.last().unwrap(),
        "rollout status deployment/iam --namespace iam --timeout=90s"
    );
    assert_eq!(last_event(&run.records[0])["context"], "aks-prod-weu");
}

#[test]
fn a_failed_rollout_is_undone_and_every_record_says_so() {
    let standin = StandIn::new(&live_iam());
    let run = standin.apply("fail", &["--context", "aks"], &lines(&all_three()));
    assert_eq!(run.code(), 1);
    assert_eq!(
        standin.calls().last().unwrap(),
        "--context aks rollout undo deployment/iam --namespace iam"
    );
    for record in &run.records {
        assert_eq!(record["error"]["code"], "rollout-failed");
        let message = record["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("exceeded its progress deadline")
                && message.contains("Deployment/iam (namespace iam) rolled back"),
            "{message}"
        );
        // The attempt stays in the audit trail.
        assert_eq!(last_event(record)["result"], "rolled-back");
    }
    assert!(
        run.stderr().contains("rolling back Deployment/iam"),
        "{}",
        run.stderr()
    );
}

#[test]
fn a_timed_out_rollout_is_undone_with_its_own_code() {
    let standin = StandIn::new(&live_iam());
    let run = standin.apply("timeout", &[], &lines(&all_three()));
    assert_eq!(run.code(), 1);
    assert!(
        standin
            .calls()
            .iter()
            .any(|c| c.starts_with("rollout undo deployment/iam"))
    );
    assert_eq!(run.records[0]["error"]["code"], "rollout-timeout");
}

#[test]
fn a_rollout_wait_that_hangs_is_stopped_and_undone() {
    let standin = StandIn::new(&live_iam());
    let started = std::time::Instant::now();
    let run = standin.apply("hang", &["--timeout", "1s"], &lines(&all_three()));
    assert_eq!(run.code(), 1);
    // --timeout 1s plus at most as much grace: stopped well before the
    // stand-in's 120 s.
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert_eq!(run.records[0]["error"]["code"], "rollout-timeout");
    assert!(
        run.records[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stopped")
    );
    assert!(
        standin
            .calls()
            .iter()
            .any(|c| c.starts_with("rollout undo deployment/iam"))
    );
}

#[test]
fn a_failed_rollout_of_a_new_workload_has_nothing_to_undo() {
    let standin = StandIn::new(&json!({"kind": "List", "items": []}));
    let run = standin.apply("fail", &[], &lines(&all_three()));
    assert_eq!(run.code(), 1);
    assert!(!standin.calls().iter().any(|c| c.contains("rollout undo")));
    assert!(
        run.records[0]["error"]["message"].as_str().unwrap().contains(
            "Deployment/iam (namespace iam) left as applied: no earlier image of ours to return to"
        )
    );
}

#[test]
fn a_refused_apply_waits_for_nothing() {
    let standin = StandIn::new(&live_iam());
    let output = tool("os-deploy")
        .arg("apply")
        .arg(fixture("iam"))
        .args(["--namespace", "iam", "--kubectl"])
        .arg(standin.dir.path().join("kubectl"))
        .env("STANDIN_LOG", standin.dir.path().join("log"))
        .env("STANDIN_LIVE", standin.dir.path().join("live.json"))
        .env("STANDIN_APPLY", "fail")
        .write_stdin(lines(&all_three()))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let records = records(&output.stdout);
    assert_eq!(records[0]["error"]["code"], "apply-failed");
    assert!(
        records[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Forbidden")
    );
    assert!(!standin.calls().iter().any(|c| c.contains("rollout")));

    // And an unverified batch never reaches the cluster at all.
    let fresh = StandIn::new(&live_iam());
    let mut input = all_three();
    input[0] = unverified("iam", IAM, IAM_DIGEST);
    let run = fresh.apply("ok", &[], &lines(&input));
    assert_eq!(run.code(), 1);
    assert!(fresh.calls().is_empty(), "{:?}", fresh.calls());
}

// --- gitops ----------------------------------------------------------------

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

const CLUSTER_KUSTOMIZATION: &str = "\
# apps/iam: what Flux reconciles for the IAM service.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: iam
resources:
  - deployment.yaml   # from the service repo
";

/// A cluster-config repository like a team's: apps/iam with a kustomization.
fn cluster_repo() -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    let path = repo.path();
    git(path, &["init", "--quiet", "--initial-branch", "main"]);
    git(path, &["config", "user.name", "Cluster Admin"]);
    git(path, &["config", "user.email", "admin@example.com"]);
    std::fs::create_dir_all(path.join("apps/iam")).unwrap();
    std::fs::write(path.join("apps/iam/kustomization.yaml"), CLUSTER_KUSTOMIZATION).unwrap();
    std::fs::copy(
        fixture("kustomize-iam/deployment.yaml"),
        path.join("apps/iam/deployment.yaml"),
    )
    .unwrap();
    git(path, &["add", "."]);
    git(path, &["commit", "--quiet", "-m", "iam: initial"]);
    repo
}

fn gitops(repo: &Path, extra: &[&str], input: &str) -> Run {
    let output = tool("os-deploy")
        .arg("gitops")
        .arg("--repo")
        .arg(repo)
        .args(["--path", "apps/iam"])
        .args(extra)
        .write_stdin(input.to_string())
        .output()
        .unwrap();
    let records = records(&output.stdout);
    Run { output, records }
}

fn two_records() -> Vec<Value> {
    vec![
        verified("iam", IAM, IAM_DIGEST),
        verified("nginx", NGINX, NGINX_DIGEST),
    ]
}

#[test]
fn gitops_sets_images_commits_and_renders_pinned() {
    let kubectl = kubectl();
    let repo = cluster_repo();
    let path = repo.path();
    let before = git(path, &["rev-parse", "HEAD"]);
    let run = gitops(path, &[], &lines(&two_records()));
    assert_eq!(run.code(), 0, "{}", run.stderr());

    let kustomization = std::fs::read_to_string(path.join("apps/iam/kustomization.yaml")).unwrap();
    assert_eq!(
        kustomization,
        format!(
            "{CLUSTER_KUSTOMIZATION}images:\n\
             - name: dev.example.com/onestream/iam\n  newName: {IAM}\n  digest: {IAM_DIGEST}\n\
             - name: nginx\n  newName: {NGINX}\n  digest: {NGINX_DIGEST}\n"
        )
    );
    let head = git(path, &["rev-parse", "HEAD"]).trim().to_string();
    assert_ne!(head, before.trim());
    assert_eq!(git(path, &["rev-parse", "HEAD~1"]), before);
    assert_eq!(
        git(path, &["status", "--porcelain"]),
        "",
        "the commit holds the change"
    );
    assert_eq!(
        git(path, &["show", "--name-only", "--format=", "HEAD"]),
        "apps/iam/kustomization.yaml\n"
    );
    assert_eq!(git(path, &["log", "-1", "--format=%an"]).trim(), "Cluster Admin");
    let message = git(path, &["log", "-1", "--format=%B"]);
    assert!(
        message.starts_with("os-deploy: pin iam, nginx in apps/iam\n"),
        "{message}"
    );
    for expected in [
        "service: iam\n".to_string(),
        format!("digest: {IAM_DIGEST}\n"),
        format!("signature key: {KEY_ID} (azurekms://onestream-kv.vault.azure.net/cosign)\n"),
        "origin commit: 9f1e2d3c4b5a69788796a5b4c3d2e1f009182736 of https://dev.azure.com/onestream/iam (run 20261125.3)\n".to_string(),
        "service: nginx\n".to_string(),
    ] {
        assert!(message.contains(&expected), "missing {expected:?} in:\n{message}");
    }

    // What Flux / Argo CD will apply: every image pinned.
    let rendered = Command::new(kubectl)
        .arg("kustomize")
        .arg(path.join("apps/iam"))
        .output()
        .unwrap();
    let rendered = String::from_utf8(rendered.stdout).unwrap();
    assert_eq!(rendered.matches(&format!("image: {IAM}@{IAM_DIGEST}")).count(), 2);
    assert_eq!(
        rendered
            .matches(&format!("image: {NGINX}@{NGINX_DIGEST}"))
            .count(),
        1
    );

    let event = last_event(&run.records[0]);
    assert_eq!(event["mode"], "gitops");
    assert_eq!(event["commit"], head);
    assert_eq!(event["path"], "apps/iam");
    assert_eq!(event["pushed"], false);

    // The next release updates the entries in place.
    let next = vec![
        verified("iam", IAM, OLD_IAM_DIGEST),
        verified("nginx", NGINX, NGINX_DIGEST),
    ];
    let run = gitops(path, &[], &lines(&next));
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let updated = std::fs::read_to_string(path.join("apps/iam/kustomization.yaml")).unwrap();
    assert_eq!(updated, kustomization.replace(IAM_DIGEST, OLD_IAM_DIGEST));
    assert_eq!(
        last_event(&run.records[0])["workloads"][0]["previous"],
        format!("{IAM}@{IAM_DIGEST}")
    );
}

#[test]
fn gitops_refuses_a_dirty_work_tree_without_touching_it() {
    kubectl();
    let repo = cluster_repo();
    let path = repo.path();
    let before = git(path, &["rev-parse", "HEAD"]);
    let edited = format!("{CLUSTER_KUSTOMIZATION}namePrefix: wip-\n");
    std::fs::write(path.join("apps/iam/kustomization.yaml"), &edited).unwrap();
    let run = gitops(path, &[], &lines(&two_records()));
    assert_eq!(run.code(), 1);
    assert_eq!(run.records[0]["error"]["code"], "dirty-worktree");
    assert!(
        run.records[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("uncommitted changes")
    );
    assert_eq!(
        std::fs::read_to_string(path.join("apps/iam/kustomization.yaml")).unwrap(),
        edited
    );
    assert_eq!(git(path, &["rev-parse", "HEAD"]), before);

    // An untracked file counts too.
    git(path, &["checkout", "--quiet", "--", "."]);
    std::fs::write(path.join("apps/iam/notes.txt"), "todo\n").unwrap();
    let run = gitops(path, &[], &lines(&two_records()));
    assert_eq!(run.records[0]["error"]["code"], "dirty-worktree");
    assert_eq!(git(path, &["rev-parse", "HEAD"]), before);
}

#[test]
fn gitops_pushes_and_a_remote_that_moved_on_is_never_overwritten() {
    kubectl();
    let remote = tempfile::tempdir().unwrap();
    git(
        remote.path(),
        &["init", "--quiet", "--bare", "--initial-branch", "main"],
    );
    let repo = cluster_repo();
    let path = repo.path();
    git(path, &["remote", "add", "origin", path_str(remote.path())]);
    git(path, &["push", "--quiet", "--set-upstream", "origin", "main"]);

    let run = gitops(path, &["--push"], &lines(&two_records()));
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(last_event(&run.records[0])["pushed"], true);
    assert_eq!(
        git(remote.path(), &["rev-parse", "main"]),
        git(path, &["rev-parse", "HEAD"])
    );

    // Someone else pushes first; our push is rejected and undone locally.
    let other = tempfile::tempdir().unwrap();
    let clone = other.path().join("clone");
    git(
        other.path(),
        &["clone", "--quiet", path_str(remote.path()), path_str(&clone)],
    );
    git(&clone, &["config", "user.name", "Other"]);
    git(&clone, &["config", "user.email", "other@example.com"]);
    std::fs::write(clone.join("apps/iam/README"), "owned by the IAM team\n").unwrap();
    git(&clone, &["add", "."]);
    git(&clone, &["commit", "--quiet", "-m", "docs"]);
    git(&clone, &["push", "--quiet"]);
    let remote_head = git(remote.path(), &["rev-parse", "main"]);

    let local_head = git(path, &["rev-parse", "HEAD"]);
    let kustomization = std::fs::read_to_string(path.join("apps/iam/kustomization.yaml")).unwrap();
    let next = vec![
        verified("iam", IAM, OLD_IAM_DIGEST),
        verified("nginx", NGINX, NGINX_DIGEST),
    ];
    let run = gitops(path, &["--push"], &lines(&next));
    assert_eq!(run.code(), 1);
    assert_eq!(run.records[0]["error"]["code"], "push-rejected");
    assert_eq!(
        git(remote.path(), &["rev-parse", "main"]),
        remote_head,
        "never forced"
    );
    assert_eq!(
        git(path, &["rev-parse", "HEAD"]),
        local_head,
        "local commit undone"
    );
    assert_eq!(
        std::fs::read_to_string(path.join("apps/iam/kustomization.yaml")).unwrap(),
        kustomization
    );
    assert_eq!(git(path, &["status", "--porcelain"]), "");
}

#[test]
fn gitops_refuses_an_unverified_batch_before_touching_the_repo() {
    kubectl();
    let repo = cluster_repo();
    let path = repo.path();
    let before = git(path, &["rev-parse", "HEAD"]);
    let run = gitops(path, &[], &lines(&[unverified("iam", IAM, IAM_DIGEST)]));
    assert_eq!(run.code(), 1);
    assert_eq!(run.records[0]["error"]["code"], "unverified");
    assert_eq!(git(path, &["rev-parse", "HEAD"]), before);
    assert_eq!(
        std::fs::read_to_string(path.join("apps/iam/kustomization.yaml")).unwrap(),
        CLUSTER_KUSTOMIZATION
    );
}

#[test]
fn require_attestation_refuses_a_batch_whose_verify_event_lists_none() {
    let dir = fixture("iam");
    let mut attested = all_three();
    let listed = json!([{"type": "vuln", "predicateType": "https://cosign.sigstore.dev/attestation/vuln/v1", "digest": format!("sha256:{}", "cd".repeat(32)), "keyId": KEY_ID, "ignoredVulns": []}]);
    for record in &mut attested[..2] {
        record["history"].as_array_mut().unwrap().last_mut().unwrap()["attestations"] = listed.clone();
    }
    // The third record's verify event lists no attestation: nothing is
    // rendered, and it says why.
    let refused = render(
        &[path_str(&dir), "--require-attestation", "vuln"],
        &lines(&attested),
    );
    assert_eq!(refused.code(), 1, "{:?}", refused.output);
    assert_eq!(refused.records[2]["error"]["code"], "unverified");
    let message = refused.records[2]["error"]["message"].as_str().unwrap();
    assert!(message.contains("lists no vuln attestation"), "{message}");
    assert!(refused.output.stdout.is_empty(), "nothing rendered");

    // Listed for all three, by name or by predicate type: rendered.
    attested[2]["history"].as_array_mut().unwrap().last_mut().unwrap()["attestations"] = listed;
    let uri = "https://cosign.sigstore.dev/attestation/vuln/v1";
    for wanted in ["vuln", uri] {
        let run = render(
            &[path_str(&dir), "--require-attestation", wanted],
            &lines(&attested),
        );
        assert_eq!(run.code(), 0, "{wanted}: {:?}", run.output);
    }
}
