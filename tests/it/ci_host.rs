//! The tools speak the CI host's language: run with TF_BUILD=True (Azure
//! Pipelines) or GITHUB_ACTIONS=true (GitHub Actions), a tool still writes
//! only records on stdout, and writes exactly the host's output variables,
//! error annotations and run summary (on stderr, and in the files GitHub
//! names).

use os_testkit as support;

use std::fs;
use std::path::Path;

use support::bins::tool;
use support::images::{self, TestImage};
use support::schema::records;

struct Run {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

fn os_digest(reference: &str, env: &[(&str, &Path)], flags: &[(&str, &str)]) -> Run {
    let mut command = tool("os-digest");
    command.args(["--service", "iam", reference]);
    for (name, value) in env {
        command.env(name, value);
    }
    for (name, value) in flags {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    Run {
        code: output.status.code(),
        stdout: output.stdout,
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

fn layout(dir: &Path) -> TestImage {
    images::single_arch(&dir.join("iam"), "1.4.2", "ci-host")
}

/// The summary row of the one artifact os-digest resolved from the layout.
fn summary_row(image: &TestImage) -> String {
    format!(
        "| iam | oci:{} | `{}` | — | — | not verified | — |",
        image.layout_dir.display(),
        image.digest
    )
}

#[test]
fn azure_pipelines_gets_output_variables_and_a_summary_on_stderr_and_stdout_keeps_only_records() {
    let dir = tempfile::tempdir().unwrap();
    let image = layout(dir.path());
    let agent_temp = dir.path().join("agent-temp");
    fs::create_dir(&agent_temp).unwrap();

    let run = os_digest(
        &image.oci_ref(),
        &[("AGENT_TEMPDIRECTORY", &agent_temp)],
        &[("TF_BUILD", "True")],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let out = records(&run.stdout);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["digest"], image.digest.as_str());

    let summary_path = agent_temp.join(format!("onestream-os-digest-{}.md", "PID"));
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 4, "{}", run.stderr);
    assert_eq!(
        lines[..3],
        [
            format!(
                "##vso[task.setvariable variable=image;isOutput=true]oci:{}",
                image.layout_dir.display()
            ),
            format!(
                "##vso[task.setvariable variable=digest;isOutput=true]{}",
                image.digest
            ),
            "##vso[task.setvariable variable=service;isOutput=true]iam".to_string(),
        ]
    );
    // The file name carries the tool's pid, so two tools in one step do not
    // overwrite each other's summary before the agent uploads it.
    let uploaded = lines[3]
        .strip_prefix("##vso[task.uploadsummary]")
        .unwrap_or_else(|| panic!("no uploadsummary command: {}", lines[3]));
    let prefix = summary_path.to_string_lossy().replace("PID.md", "");
    assert!(
        uploaded.starts_with(&prefix) && uploaded.ends_with(".md"),
        "{uploaded}"
    );
    let summary = fs::read_to_string(uploaded).unwrap();
    assert!(summary.starts_with("### os-digest: 1 artifact\n"), "{summary}");
    assert!(summary.contains(&summary_row(&image)), "{summary}");
}

#[test]
fn azure_pipelines_gets_an_error_annotation_and_no_output_variables_for_a_failed_record() {
    let dir = tempfile::tempdir().unwrap();
    let image = layout(dir.path());
    let missing = format!("oci:{}:no-such-tag", image.layout_dir.display());

    // No AGENT_TEMPDIRECTORY: outside a real agent no summary file is left behind.
    let run = os_digest(&missing, &[], &[("TF_BUILD", "True")]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let out = records(&run.stdout);
    assert_eq!(out[0]["error"]["code"], "not-found");
    let message = out[0]["error"]["message"].as_str().unwrap();
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines,
        [
            format!("os-digest: error: {message}"),
            format!("##vso[task.logissue type=error;code=not-found]os-digest: {message}"),
        ],
        "{}",
        run.stderr
    );
}

#[test]
fn github_actions_gets_outputs_and_a_step_summary_in_its_files_and_nothing_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let image = layout(dir.path());
    let output = dir.path().join("github_output");
    let summary = dir.path().join("step_summary");
    // The runner's files may already hold an earlier tool's lines: append.
    fs::write(&output, "earlier=kept\n").unwrap();
    fs::write(&summary, "# build\n\n").unwrap();

    let run = os_digest(
        &image.oci_ref(),
        &[("GITHUB_OUTPUT", &output), ("GITHUB_STEP_SUMMARY", &summary)],
        &[("GITHUB_ACTIONS", "true")],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(records(&run.stdout).len(), 1);
    assert_eq!(run.stderr, "");
    assert_eq!(
        fs::read_to_string(&output).unwrap(),
        format!(
            "earlier=kept\nimage=oci:{}\ndigest={}\nservice=iam\n",
            image.layout_dir.display(),
            image.digest
        )
    );
    let written = fs::read_to_string(&summary).unwrap();
    assert!(
        written.starts_with("# build\n\n### os-digest: 1 artifact\n\n| service | image | digest |"),
        "{written}"
    );
    assert!(written.contains(&summary_row(&image)), "{written}");
}

#[test]
fn github_actions_gets_an_escaped_error_annotation_and_no_outputs_for_a_failed_record() {
    let dir = tempfile::tempdir().unwrap();
    let image = layout(dir.path());
    let output = dir.path().join("github_output");
    let summary = dir.path().join("step_summary");
    let missing = format!("oci:{}:no-such-tag", image.layout_dir.display());

    let run = os_digest(
        &missing,
        &[("GITHUB_OUTPUT", &output), ("GITHUB_STEP_SUMMARY", &summary)],
        &[("GITHUB_ACTIONS", "true")],
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let out = records(&run.stdout);
    let message = out[0]["error"]["message"].as_str().unwrap();
    let escaped = message
        .replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A");
    assert_eq!(
        run.stderr.lines().collect::<Vec<_>>(),
        [
            format!("os-digest: error: {message}"),
            format!("::error title=os-digest not-found::{escaped}"),
        ]
    );
    assert!(!output.exists(), "no successful record, no outputs");
    let written = fs::read_to_string(&summary).unwrap();
    assert!(
        written.starts_with("### os-digest: 1 artifact, 1 failed\n"),
        "{written}"
    );
    assert!(written.contains("FAILED at digest (not-found)"), "{written}");
}

#[test]
fn outside_ci_nothing_but_the_records_and_human_errors_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let image = layout(dir.path());
    let run = os_digest(&image.oci_ref(), &[], &[]);
    assert_eq!(run.code, Some(0));
    assert_eq!(run.stderr, "");
    assert_eq!(records(&run.stdout).len(), 1);
}

#[test]
fn os_deploy_tells_github_actions_what_it_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("k8s");
    fs::create_dir(&manifests).unwrap();
    fs::write(
        manifests.join("pod.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: iam\nspec:\n  containers:\n    - name: iam\n      image: prod.example.com/onestream/iam:1.4.2\n",
    )
    .unwrap();
    let digest = format!("sha256:{}", "3c".repeat(32));
    let record = serde_json::json!({
        "service": "iam",
        "image": "prod.example.com/onestream/iam",
        "digest": digest,
        "history": [{
            "step": "verify", "tool": "os-verify 0.1.0", "at": "2026-11-25T10:04:00Z",
            "image": "prod.example.com/onestream/iam", "digest": digest,
            "keyId": format!("sha256:{}", "b3".repeat(32)),
            "signature": format!("prod.example.com/onestream/iam:sha256-{}.sig@sha256:{}", "3c".repeat(32), "ab".repeat(32)),
            "identity": "dev.example.com/onestream/iam", "verified": true
        }]
    });
    let output = dir.path().join("github_output");
    let summary = dir.path().join("step_summary");
    let kept = dir.path().join("deployed.jsonl");
    let run = tool("os-deploy")
        .arg("render")
        .arg(&manifests)
        .arg("--records-out")
        .arg(&kept)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", &output)
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env_remove("TF_BUILD")
        .write_stdin(format!("{record}\n"))
        .output()
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // stdout is the YAML; the records went to --records-out and to the host.
    assert!(String::from_utf8_lossy(&run.stdout).contains(&format!("@{digest}")));
    assert_eq!(records(&fs::read(&kept).unwrap()).len(), 1);
    assert_eq!(
        fs::read_to_string(&output).unwrap(),
        format!("image=prod.example.com/onestream/iam\ndigest={digest}\nservice=iam\n")
    );
    let written = fs::read_to_string(&summary).unwrap();
    assert!(written.starts_with("### os-deploy: 1 artifact"), "{written}");
    assert!(written.contains(&format!("`{digest}`")), "{written}");
}
