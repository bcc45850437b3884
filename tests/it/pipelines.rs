//! pipelines/: the Azure DevOps templates, the service pipelines and the GitHub
//! workflow parse and hold together (every `template:` and every script they
//! name exists, service pipelines stay short, the bash is clean), and the step
//! scripts they run — exactly those files — promote an image through three
//! local registries with the real tools. scripts/release and
//! scripts/install-tools are checked here too: a tarball installs only with
//! its pinned checksum.

use os_testkit as support;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use serde_norway::Value as Yaml;
use support::bins;
use support::images;
use support::registry::TestRegistry;
use support::schema::records;

/// A service pipeline longer than this has stopped being a list of values.
const SERVICE_PIPELINE_MAX_LINES: usize = 150;
/// The repository alias service pipelines give the toolchain (its templates
/// are then named `path/from/the/repo/root.yml@onestream`).
const TOOLCHAIN_ALIAS: &str = "onestream";
/// How the GitHub service workflow names the toolchain's reusable workflows:
/// pipelines/github/<name> is published as .github/workflows/<name>.
const TOOLCHAIN_WORKFLOWS: &str = "onestream/toolchain/.github/workflows/";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files_under(dir: &Path, keep: &dyn Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if keep(&path) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn yaml_files() -> Vec<PathBuf> {
    files_under(&root().join("pipelines"), &|path| {
        matches!(path.extension().and_then(|e| e.to_str()), Some("yml" | "yaml"))
    })
}

fn step_scripts() -> Vec<PathBuf> {
    files_under(&root().join("pipelines/scripts"), &|path| {
        path.extension().is_some_and(|e| e == "sh")
    })
}

fn parse(path: &Path) -> Yaml {
    let text = fs::read_to_string(path).unwrap();
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{} does not parse as YAML: {e}", path.display()))
}

/// Every `(key, string value)` pair anywhere in a YAML document.
fn string_entries(yaml: &Yaml, found: &mut Vec<(String, String)>) {
    match yaml {
        Yaml::Mapping(map) => {
            for (key, value) in map {
                if let (Some(key), Some(value)) = (key.as_str(), value.as_str()) {
                    found.push((key.to_string(), value.to_string()));
                }
                string_entries(value, found);
            }
        }
        Yaml::Sequence(items) => items.iter().for_each(|item| string_entries(item, found)),
        Yaml::Tagged(tagged) => string_entries(&tagged.value, found),
        _ => {}
    }
}

fn entries(path: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    string_entries(&parse(path), &mut found);
    found
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}

#[test]
fn every_yaml_file_under_pipelines_parses() {
    let files = yaml_files();
    // The templates, two services, tools.yml and the GitHub workflows at least.
    assert!(
        files.len() >= 12,
        "only {} YAML files under pipelines/: {files:?}",
        files.len()
    );
    for file in &files {
        assert!(
            matches!(parse(file), Yaml::Mapping(_)),
            "{} is not a YAML mapping",
            relative(file)
        );
    }
}

/// Where Azure DevOps finds a `template:` named in `from`: `PATH@alias` from
/// the root of the aliased repository (only the toolchain's alias is known),
/// `/PATH` from the repository root, anything else next to `from`.
fn resolve_template(from: &Path, reference: &str) -> Result<PathBuf, String> {
    match reference.split_once('@') {
        Some((path, TOOLCHAIN_ALIAS)) => Ok(root().join(path.trim_start_matches('/'))),
        Some((_, alias)) => Err(format!("unknown repository alias {alias:?}")),
        None if reference.starts_with('/') => Ok(root().join(reference.trim_start_matches('/'))),
        None => Ok(from.parent().unwrap().join(reference)),
    }
}

#[test]
fn every_template_reference_resolves_to_a_file_in_the_repo() {
    let mut checked = 0;
    let mut problems = Vec::new();
    for file in yaml_files() {
        for (key, value) in entries(&file) {
            let target = match key.as_str() {
                "template" => resolve_template(&file, &value),
                "uses" if value.starts_with(TOOLCHAIN_WORKFLOWS) => {
                    let name = value[TOOLCHAIN_WORKFLOWS.len()..].split('@').next().unwrap();
                    Ok(root().join("pipelines/github").join(name))
                }
                "uses" if value.starts_with("./") => Ok(root().join(&value[2..])),
                _ => continue,
            };
            checked += 1;
            match target {
                Ok(path) if path.is_file() => {}
                Ok(path) => problems.push(format!(
                    "{}: {key}: {value} -> {} is missing",
                    relative(&file),
                    path.display()
                )),
                Err(why) => problems.push(format!("{}: {key}: {value}: {why}", relative(&file))),
            }
        }
    }
    assert!(
        problems.is_empty(),
        "unresolved references:\n{}",
        problems.join("\n")
    );
    // governance.yml alone names 7 templates; the services and the GitHub caller add 3.
    assert!(
        checked >= 10,
        "only {checked} references found: is the walk broken?"
    );
}

/// Every `pipelines/scripts/NAME` mentioned in `text` (a bare
/// `pipelines/scripts/` or `pipelines/scripts/*.sh` in a comment names none).
fn scripts_named_in(text: &str) -> BTreeSet<String> {
    const PREFIX: &str = "pipelines/scripts/";
    let mut named = BTreeSet::new();
    for (at, _) in text.match_indices(PREFIX) {
        let name: String = text[at + PREFIX.len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            .collect();
        if !name.is_empty() {
            named.insert(format!("{PREFIX}{name}"));
        }
    }
    named
}

#[test]
fn every_script_the_pipelines_run_exists_and_is_executable() {
    let mut named = BTreeSet::new();
    for file in yaml_files() {
        named.extend(scripts_named_in(&fs::read_to_string(&file).unwrap()));
    }
    for script in [
        "pipelines/scripts/build.sh",
        "pipelines/scripts/sign.sh",
        "pipelines/scripts/promote.sh",
        "pipelines/scripts/verify.sh",
        "pipelines/scripts/deploy.sh",
        "pipelines/scripts/install-tools-ci.sh",
    ] {
        assert!(
            named.contains(script),
            "no pipeline runs {script}; named: {named:?}"
        );
    }
    for script in &named {
        let path = root().join(script);
        let mode = fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{script} is named in pipelines/ but: {e}"))
            .permissions()
            .mode();
        assert!(mode & 0o111 != 0, "{script} is not executable");
    }
}

#[test]
fn service_pipelines_stay_short_and_only_fill_in_the_governance_template() {
    let services = files_under(&root().join("pipelines/azure/services"), &|_| true);
    assert!(services.len() >= 2, "expected iam.yml and auth.yml: {services:?}");
    let github = root().join("pipelines/github/iam.yml");
    for file in services.iter().chain([&github]) {
        let lines = fs::read_to_string(file).unwrap().lines().count();
        assert!(
            lines < SERVICE_PIPELINE_MAX_LINES,
            "{} has {lines} lines; a service pipeline must stay under {SERVICE_PIPELINE_MAX_LINES}",
            relative(file)
        );
    }
    for file in &services {
        let yaml = parse(file);
        assert_eq!(
            yaml["extends"]["template"].as_str(),
            Some("pipelines/azure/templates/governance.yml@onestream"),
            "{} must extend the governance template",
            relative(file)
        );
        // Its own stages, jobs or steps would run outside the governance.
        for key in ["stages", "jobs", "steps"] {
            assert!(
                yaml.get(key).is_none(),
                "{} defines its own {key}",
                relative(file)
            );
        }
    }
}

#[test]
fn governance_verifies_right_before_every_deploy_and_refuses_tag_settings() {
    let text = fs::read_to_string(root().join("pipelines/azure/templates/governance.yml")).unwrap();
    let verify = text
        .find("- template: verify.yml")
        .expect("governance runs verify.yml");
    let deploy = text
        .find("- template: deploy.yml")
        .expect("governance runs deploy.yml");
    assert!(verify < deploy, "verify.yml must come before deploy.yml");
    assert_eq!(
        text.matches("- template: deploy.yml").count(),
        1,
        "one deploy path only"
    );
    let between = &text[verify..deploy];
    assert_eq!(
        between.matches("- template:").count(),
        1,
        "nothing may run between verify and deploy"
    );
    assert!(
        text.contains("in(setting.key, 'image', 'tag', 'imageTag'"),
        "tag settings are refused"
    );
    // The tool version is pinned in tools.yml, not a parameter a service could set.
    let parameters = &text[text.find("parameters:").unwrap()..text.find("variables:").unwrap()];
    assert!(
        !parameters.to_lowercase().contains("version"),
        "a version parameter would unpin the tools"
    );
    assert!(text.contains("- template: tools.yml"));
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"))
}

fn check(command: &mut Command, what: &str) {
    let output = run(command);
    assert!(
        output.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `${{ … }}` template expressions and `$(Macro.Name)` Azure macros become
/// plain shell words, so bash and shellcheck see what the agent would run.
fn as_plain_bash(script: &str) -> String {
    let mut out = String::new();
    let mut rest = script;
    while let Some(at) = rest.find("${{") {
        out.push_str(&rest[..at]);
        let end = rest[at..].find("}}").expect("unclosed ${{") + at + 2;
        out.push_str("TEMPLATE_VALUE");
        rest = &rest[end..];
    }
    out.push_str(rest);
    let mut plain = String::new();
    let mut rest = out.as_str();
    while let Some(at) = rest.find("$(") {
        plain.push_str(&rest[..at]);
        let inner_end = rest[at..].find(')').map(|i| i + at);
        match inner_end {
            Some(end)
                if rest[at + 2..end]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') =>
            {
                plain.push_str("\"$AZP_MACRO\"");
                rest = &rest[end + 1..];
            }
            _ => {
                plain.push_str("$(");
                rest = &rest[at + 2..];
            }
        }
    }
    plain.push_str(rest);
    plain
}

#[test]
fn the_bash_in_pipelines_passes_bash_n_and_shellcheck() {
    support::registry::ensure_tools();
    let shellcheck = Path::new("/usr/bin/shellcheck");
    assert!(shellcheck.exists(), "shellcheck is missing: run scripts/setup");

    let mut files: Vec<PathBuf> = step_scripts();
    assert!(files.len() >= 7, "step scripts: {files:?}");
    files.push(root().join("scripts/install-tools"));
    files.push(root().join("scripts/release"));

    // Inline scripts in the YAML, as files.
    let inline_dir = tempfile::tempdir().unwrap();
    let mut inline = 0;
    for file in yaml_files() {
        for (key, value) in entries(&file) {
            if matches!(key.as_str(), "bash" | "script" | "run" | "inlineScript") {
                inline += 1;
                let path = inline_dir.path().join(format!(
                    "{inline}-{}.sh",
                    file.file_stem().unwrap().to_string_lossy()
                ));
                fs::write(
                    &path,
                    format!(
                        "#!/usr/bin/env bash\n# from {}\n{}\n",
                        relative(&file),
                        as_plain_bash(&value)
                    ),
                )
                .unwrap();
                files.push(path);
            }
        }
    }
    assert!(
        inline >= 10,
        "only {inline} inline scripts found: is the walk broken?"
    );

    for file in &files {
        check(
            Command::new("bash").arg("-n").arg(file),
            &format!("bash -n {}", file.display()),
        );
        check(
            Command::new(shellcheck).arg("-x").arg(file).current_dir(root()),
            &format!("shellcheck -x {} (run from the repository root)", file.display()),
        );
    }
}

// --- the step scripts against local registries --------------------------------------

const COSIGN_PASSWORD: &str = "pipelines-test-password";

/// Runs a step script the way an agent does: the tools on PATH, nothing from
/// this machine's docker config or CI variables.
fn step(script: &str) -> Command {
    let tools = bins::bin("os-digest").parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        tools.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new(root().join("pipelines/scripts").join(script));
    command
        .env("PATH", path)
        .env("DOCKER_CONFIG", "/nonexistent/onestream-tests")
        .env("COSIGN_PASSWORD", COSIGN_PASSWORD);
    for variable in [
        "TF_BUILD",
        "AGENT_TEMPDIRECTORY",
        "GITHUB_ACTIONS",
        "GITHUB_OUTPUT",
        "GITHUB_STEP_SUMMARY",
        "BUILD_SOURCEVERSION",
        "BUILD_REPOSITORY_URI",
        "BUILD_BUILDNUMBER",
        "BUILD_BUILDID",
        "GITHUB_SHA",
        "GITHUB_REPOSITORY",
        "GITHUB_RUN_ID",
        "REGISTRY_AUTH_FILE",
        "OS_REGISTRY_USERNAME",
        "OS_REGISTRY_PASSWORD",
        "OS_LOG",
    ] {
        command.env_remove(variable);
    }
    command
}

fn step_ok(command: &mut Command) -> String {
    let output = run(command);
    assert!(
        output.status.success(),
        "{command:?}: {}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stderr).unwrap()
}

fn read_records(path: &Path) -> Vec<Value> {
    records(&fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())))
}

fn steps_of(record: &Value) -> Vec<&str> {
    record["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["step"].as_str().unwrap())
        .collect()
}

fn key_pair(dir: &Path) -> (PathBuf, PathBuf) {
    let prefix = dir.join("cosign");
    bins::tool("os-sign")
        .args(["generate-key-pair", "--output-key-prefix"])
        .arg(&prefix)
        .env("COSIGN_PASSWORD", COSIGN_PASSWORD)
        .assert()
        .success();
    (prefix.with_extension("key"), prefix.with_extension("pub"))
}

/// What the step scripts leave after promoting iam through three registries:
/// the verified records are `records/verified.jsonl`, the image lives in prod.
// Read by the deploy step's test, which needs the real os-deploy (issue 5);
// until it lands, only the registries' lifetimes matter.
struct Promoted {
    // Kept so the registries outlive the promotion they served.
    _dev: TestRegistry,
    _staging: TestRegistry,
    prod: TestRegistry,
    work: tempfile::TempDir,
    image: images::TestImage,
    records: PathBuf,
}

#[test]
fn step_scripts_promote_one_digest_from_a_build_layout_through_dev_staging_and_prod() {
    promote_iam_through_dev_staging_and_prod();
}

/// build.sh, sign.sh, promote.sh to staging and to prod, verify.sh: each
/// checked on the way. The deploy step's test (with os-deploy) starts here.
fn promote_iam_through_dev_staging_and_prod() -> Promoted {
    let dev = TestRegistry::start();
    let staging = TestRegistry::start();
    let prod = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout/iam");
    let image = images::single_arch(&layout, "20261125.3", "iam-pipelines");
    let (key, public_key) = key_pair(work.path());
    let records = work.path().join("records");
    let agent_temp = work.path().join("agent-temp");
    fs::create_dir_all(&agent_temp).unwrap();

    // build.sh, as the build template runs it on an Azure agent.
    let stderr = step_ok(
        step("build.sh")
            .args([
                "--service",
                "iam",
                "--registry",
                &format!("{}/onestream", dev.host()),
            ])
            .args(["--tag", "20261125.3", "--layout"])
            .arg(&layout)
            .arg("--out")
            .arg(records.join("build.jsonl"))
            .env("TF_BUILD", "True")
            .env("AGENT_TEMPDIRECTORY", &agent_temp)
            .env("BUILD_SOURCEVERSION", "9f1e000000000000000000000000000000000001"),
    );
    let built = read_records(&records.join("build.jsonl"));
    assert_eq!(built.len(), 1);
    assert_eq!(built[0]["image"], format!("{}/onestream/iam", dev.host()));
    assert_eq!(built[0]["digest"], image.digest.as_str());
    assert_eq!(
        built[0]["source"]["commit"],
        "9f1e000000000000000000000000000000000001"
    );
    assert_eq!(steps_of(&built[0]), ["digest", "import"]);
    // The template's later steps read build.digest: the tools set it.
    assert!(
        stderr.contains(&format!(
            "##vso[task.setvariable variable=digest;isOutput=true]{}\n",
            image.digest
        )),
        "{stderr}"
    );
    assert_eq!(
        images::inspect_raw(&dev, "onestream/iam", "20261125.3").len() as u64,
        image.size
    );

    step_ok(
        step("sign.sh")
            .args(["--key"])
            .arg(&key)
            .args(["-a", "service=iam", "--in"])
            .arg(records.join("build.jsonl"))
            .arg("--out")
            .arg(records.join("signed.jsonl")),
    );
    for (registry, from, to) in [
        (&staging, "signed.jsonl", "staging.jsonl"),
        (&prod, "staging.jsonl", "prod.jsonl"),
    ] {
        step_ok(
            step("promote.sh")
                .args(["--to", &format!("{}/onestream", registry.host()), "--key"])
                .arg(&public_key)
                .args(["-a", "service=iam", "--in"])
                .arg(records.join(from))
                .arg("--out")
                .arg(records.join(to)),
        );
    }
    step_ok(
        step("verify.sh")
            .arg("--key")
            .arg(&public_key)
            .args(["-a", "service=iam", "--in"])
            .arg(records.join("prod.jsonl"))
            .arg("--out")
            .arg(records.join("verified.jsonl")),
    );

    let verified = read_records(&records.join("verified.jsonl"));
    assert_eq!(verified.len(), 1);
    let record = &verified[0];
    assert_eq!(
        record["digest"],
        image.digest.as_str(),
        "the digest never changes"
    );
    assert_eq!(record["image"], format!("{}/onestream/iam", prod.host()));
    assert_eq!(
        steps_of(record),
        [
            "digest", "import", "sign", "import", "verify", "import", "verify", "verify"
        ]
    );
    let history = record["history"].as_array().unwrap();
    assert_eq!(history[3]["to"], format!("{}/onestream/iam", staging.host()));
    assert_eq!(history[5]["from"], format!("{}/onestream/iam", staging.host()));
    assert_eq!(history[7]["image"], format!("{}/onestream/iam", prod.host()));
    assert_eq!(history[7]["verified"], true);
    assert_eq!(
        images::inspect_raw(&prod, "onestream/iam", &image.digest).len() as u64,
        image.size
    );
    Promoted {
        _dev: dev,
        _staging: staging,
        prod,
        work,
        image,
        records,
    }
}

#[test]
fn promote_step_fails_when_the_signature_does_not_carry_the_required_annotation() {
    let dev = TestRegistry::start();
    let staging = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout/auth");
    images::single_arch(&layout, "1.0.0", "auth-pipelines");
    let (key, public_key) = key_pair(work.path());
    let records = work.path().join("records");
    step_ok(
        step("build.sh")
            .args([
                "--service",
                "auth",
                "--registry",
                &format!("{}/onestream", dev.host()),
            ])
            .args(["--tag", "1.0.0", "--layout"])
            .arg(&layout)
            .arg("--out")
            .arg(records.join("build.jsonl")),
    );
    step_ok(
        step("sign.sh")
            .arg("--key")
            .arg(&key)
            .args(["-a", "service=auth", "--in"])
            .arg(records.join("build.jsonl"))
            .arg("--out")
            .arg(records.join("signed.jsonl")),
    );
    // Signed for auth; the stage demands iam's annotation.
    let output = run(step("promote.sh")
        .args(["--to", &format!("{}/onestream", staging.host()), "--key"])
        .arg(&public_key)
        .args(["-a", "service=iam", "--in"])
        .arg(records.join("signed.jsonl"))
        .arg("--out")
        .arg(records.join("staging.jsonl")));
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("os-import | os-verify exited 0 1"), "{stderr}");
    let out = read_records(&records.join("staging.jsonl"));
    assert_eq!(out[0]["error"]["code"], "annotation-mismatch", "{out:?}");
}

/// A stand-in os-deploy first on PATH that notes it was started: the gate
/// must refuse before it.
fn deploy_step_with_marker(dir: &Path) -> (Command, PathBuf) {
    let fake = dir.join("fake-bin");
    fs::create_dir_all(&fake).unwrap();
    let marker = dir.join("os-deploy-was-started");
    fs::write(
        fake.join("os-deploy"),
        format!("#!/bin/sh\ntouch '{}'\ncat\n", marker.display()),
    )
    .unwrap();
    fs::set_permissions(fake.join("os-deploy"), fs::Permissions::from_mode(0o755)).unwrap();
    let mut command = step("deploy.sh");
    let path = format!("{}:{}", fake.display(), std::env::var("PATH").unwrap_or_default());
    command.env("PATH", path);
    (command, marker)
}

// The deploy step's gate refuses unverified, moved and tag-only records
// before os-deploy starts, and lets a verified batch through: one test each.

fn digest_ab() -> String {
    format!("sha256:{}", "ab".repeat(32))
}

fn verified_here() -> serde_json::Value {
    serde_json::json!({
        "service": "iam", "image": "prod.example.com/onestream/iam", "digest": digest_ab(),
        "history": [{"step": "verify", "image": "prod.example.com/onestream/iam", "verified": true}]
    })
}

/// Runs the deploy step (gitops mode, os-deploy a stand-in that leaves a
/// marker) on these records; its output, and whether os-deploy started.
fn deploy_step_on(records: &[serde_json::Value]) -> (std::process::Output, bool) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let lines: Vec<String> = records.iter().map(|r| format!("{r}\n")).collect();
    fs::write(&input, lines.concat()).unwrap();
    let (mut command, marker) = deploy_step_with_marker(dir.path());
    let output = run(command
        .args([
            "--mode",
            "gitops",
            "--repo",
            "cluster-config",
            "--path",
            "apps/iam",
            "--in",
        ])
        .arg(&input)
        .arg("--out")
        .arg(dir.path().join("out.jsonl")));
    (output, marker.exists())
}

/// One good record beside the bad one: the whole batch is refused, saying
/// `why`, before os-deploy starts.
fn assert_refused(refused: serde_json::Value, why: &str) {
    let (output, started) = deploy_step_on(&[verified_here(), refused]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{why}: {stderr}");
    assert!(stderr.contains("refusing to deploy"), "{why}: {stderr}");
    assert!(stderr.contains(why), "expected {why:?} in: {stderr}");
    assert!(!started, "{why}: os-deploy was started");
}

#[test]
fn deploy_step_refuses_a_record_never_verified() {
    assert_refused(
        serde_json::json!({"service": "iam", "image": "prod.example.com/onestream/iam", "digest": digest_ab(),
            "history": [{"step": "sign"}]}),
        "never verified",
    );
}

#[test]
fn deploy_step_refuses_a_record_verified_where_it_no_longer_lives() {
    assert_refused(
        serde_json::json!({"service": "iam", "image": "prod.example.com/onestream/iam", "digest": digest_ab(),
            "history": [{"step": "verify", "image": "staging.example.com/onestream/iam", "verified": true},
                        {"step": "import", "to": "prod.example.com/onestream/iam"}]}),
        "verified at staging.example.com/onestream/iam, but it now lives at prod.example.com/onestream/iam",
    );
}

#[test]
fn deploy_step_refuses_a_tag_only_record() {
    assert_refused(
        serde_json::json!({"service": "iam", "image": "prod.example.com/onestream/iam", "tag": "1.4.2",
            "history": [{"step": "verify", "image": "prod.example.com/onestream/iam", "verified": true}]}),
        "no digest: a tag-only deploy is not allowed",
    );
}

#[test]
fn deploy_step_lets_a_verified_batch_through_to_os_deploy() {
    let (output, started) = deploy_step_on(&[verified_here()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(started, "a verified batch must reach os-deploy");
}

#[test]
fn step_scripts_refuse_failed_records_and_missing_flags() {
    let dir = tempfile::tempdir().unwrap();
    let failed = dir.path().join("failed.jsonl");
    fs::write(
        &failed,
        "{\"service\":\"iam\",\"image\":\"r.example.com/iam\",\"error\":{\"step\":\"digest\",\"code\":\"not-found\",\"message\":\"gone\"}}\n",
    )
    .unwrap();
    let output = run(step("sign.sh")
        .args(["--key", "cosign.key", "--in"])
        .arg(&failed)
        .arg("--out")
        .arg(dir.path().join("out.jsonl")));
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("iam: digest/not-found: gone"));

    let output = run(step("promote.sh").args(["--key", "cosign.pub"]));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("missing --to --in --out"),
        "{output:?}"
    );
}

// --- scripts/release and scripts/install-tools ---------------------------------------

/// Five stand-in tools printing `<name> 0.1.0`: what is checked here is the
/// packaging, the checksum and the install, not the tools (os-deploy is still
/// a stub without --version in this branch).
fn stand_in_tools(dir: &Path) -> PathBuf {
    let bin = dir.join("stand-in-bin");
    fs::create_dir_all(&bin).unwrap();
    for tool in bins::TOOLS {
        let path = bin.join(tool);
        fs::write(
            &path,
            format!("#!/bin/sh\necho '{tool} {}'\n", env!("CARGO_PKG_VERSION")),
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

#[test]
fn a_release_tarball_installs_only_with_its_pinned_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let bin = stand_in_tools(dir.path());
    let dist = dir.path().join("dist");
    let output = run(Command::new(root().join("scripts/release"))
        .arg("--bin-dir")
        .arg(&bin)
        .arg("--out")
        .arg(&dist));
    assert!(output.status.success(), "{output:?}");
    let line = String::from_utf8(output.stdout).unwrap();
    let (sha256, name) = line.trim_end().split_once("  ").expect("sha256sum format");
    assert_eq!(
        name,
        format!(
            "onestream-tools-{}-{}-linux.tar.gz",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::ARCH
        )
    );
    let tarball = dist.join(name);
    assert_eq!(
        fs::read_to_string(dist.join(format!("{name}.sha256"))).unwrap(),
        line
    );

    // Reproducible: the same binaries make the same bytes.
    let again = dir.path().join("again");
    let output = run(Command::new(root().join("scripts/release"))
        .arg("--bin-dir")
        .arg(&bin)
        .arg("--out")
        .arg(&again));
    assert!(output.status.success());
    assert_eq!(fs::read(&tarball).unwrap(), fs::read(again.join(name)).unwrap());

    let install = |prefix: &Path, sha256: &str| {
        run(Command::new(root().join("scripts/install-tools"))
            .arg("--tarball")
            .arg(&tarball)
            .args([
                "--sha256",
                sha256,
                "--version",
                env!("CARGO_PKG_VERSION"),
                "--prefix",
            ])
            .arg(prefix))
    };
    let prefix = dir.path().join("agent");
    let output = install(&prefix, sha256);
    assert!(output.status.success(), "{output:?}");
    for tool in bins::TOOLS {
        assert!(prefix.join("bin").join(tool).is_file(), "{tool} not installed");
    }

    let wrong = "0".repeat(64);
    let refused = dir.path().join("refused");
    let output = install(&refused, &wrong);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(&format!("has SHA-256 {sha256}, expected {wrong}"))
    );
    assert!(
        !refused.join("bin/os-digest").exists(),
        "nothing is installed from a tarball that does not match"
    );
}

#[test]
fn install_step_puts_the_tools_on_path_for_later_steps_on_both_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let bin = stand_in_tools(dir.path());
    let dist = dir.path().join("dist");
    let output = run(Command::new(root().join("scripts/release"))
        .arg("--bin-dir")
        .arg(&bin)
        .arg("--out")
        .arg(&dist));
    let line = String::from_utf8(output.stdout).unwrap();
    let (sha256, name) = line.trim_end().split_once("  ").unwrap();

    let prefix = dir.path().join("tools");
    let mut azure = step("install-tools-ci.sh");
    azure
        .env("TF_BUILD", "True")
        .env("OS_TOOLS_VERSION", env!("CARGO_PKG_VERSION"))
        .env("OS_TOOLS_SHA256", sha256)
        .env("OS_TOOLS_TARBALL", dist.join(name))
        .env("OS_TOOLS_PREFIX", &prefix);
    let output = run(&mut azure);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!("##vso[task.prependpath]{}/bin\n", prefix.display())
    );

    let github_path = dir.path().join("github_path");
    let mut github = step("install-tools-ci.sh");
    github
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_PATH", &github_path)
        .env("OS_TOOLS_VERSION", env!("CARGO_PKG_VERSION"))
        .env("OS_TOOLS_SHA256", sha256)
        .env("OS_TOOLS_TARBALL", dist.join(name))
        .env("OS_TOOLS_PREFIX", &prefix);
    let output = run(&mut github);
    assert!(output.status.success(), "{output:?}");
    assert!(output.stdout.is_empty());
    assert_eq!(
        fs::read_to_string(&github_path).unwrap(),
        format!("{}/bin\n", prefix.display())
    );
}

/// deploy.sh in render mode pins the manifests to the digest verified in
/// prod (through the real os-deploy and its verification gate).
#[test]
fn deploy_step_renders_the_manifests_pinned_to_the_verified_digest() {
    let promoted = promote_iam_through_dev_staging_and_prod();
    let manifests = promoted.work.path().join("k8s/iam");
    fs::create_dir_all(&manifests).unwrap();
    let repository = format!("{}/onestream/iam", promoted.prod.host());
    fs::write(
        manifests.join("deployment.yaml"),
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: iam\nspec:\n  selector:\n    matchLabels: {{app: iam}}\n  template:\n    metadata:\n      labels: {{app: iam}}\n    spec:\n      containers:\n        - name: iam\n          image: {repository}:20261125.3\n"
        ),
    )
    .unwrap();
    let rendered = promoted.work.path().join("rendered.yaml");
    step_ok(
        step("deploy.sh")
            .args(["--mode", "render", "--manifests"])
            .arg(&manifests)
            .arg("--rendered")
            .arg(&rendered)
            .arg("--in")
            .arg(promoted.records.join("verified.jsonl"))
            .arg("--out")
            .arg(promoted.records.join("deployed.jsonl")),
    );
    let yaml = fs::read_to_string(&rendered).unwrap();
    assert!(
        yaml.contains(&format!("image: {repository}@{}", promoted.image.digest)),
        "{yaml}"
    );
    assert!(!yaml.contains(":20261125.3"), "the tag is gone: {yaml}");
    let deployed = read_records(&promoted.records.join("deployed.jsonl"));
    assert_eq!(deployed.len(), 1);
    assert_eq!(deployed[0]["digest"], promoted.image.digest.as_str());
    assert_eq!(
        deployed[0]["history"].as_array().unwrap().last().unwrap()["step"],
        "deploy"
    );
}
