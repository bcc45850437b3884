//! SLSA provenance v1 (`https://slsa.dev/provenance/v1`) of a build, from
//! the CI host's variables and the record's `source`: what `os-sign attest
//! --type slsaprovenance1` attests when given no predicate.
//!
//! - GitHub Actions follows GitHub's published build type
//!   (`https://actions.github.io/buildtypes/workflow/v1`: `externalParameters.workflow`
//!   holds `ref`, `repository` and `path`).
//! - Azure Pipelines has no published build type, so it has ours,
//!   [`AZURE_PIPELINES_BUILD_TYPE`], documented in docs/os-sign.md:
//!   `externalParameters` holds `repository`, `ref` and `pipeline`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

pub const AZURE_PIPELINES_BUILD_TYPE: &str = "https://onestream.dev/slsa/azure-pipelines/v1";
pub const GITHUB_WORKFLOW_BUILD_TYPE: &str = "https://actions.github.io/buildtypes/workflow/v1";

/// Why no provenance could be built: the variables that were missing.
#[derive(Debug, thiserror::Error)]
#[error(
    "--type slsaprovenance1 without --predicate builds provenance from the CI host, but {0}; give --predicate FILE outside CI"
)]
pub struct MissingProvenance(String);

/// The provenance of the running CI job for an artifact whose record has
/// `source` (its commit and repository win over the variables'), started
/// at the pipeline's start (Azure's `SYSTEM_PIPELINESTARTTIME`, else `now`)
/// and finished `now`.
pub fn from_ci(
    env: &dyn Fn(&str) -> Option<String>,
    source: Option<&Map<String, Value>>,
    now: DateTime<Utc>,
) -> Result<Value, MissingProvenance> {
    let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let from_source = |field: &str| {
        source
            .and_then(|s| s.get(field))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let finished = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    if var("GITHUB_ACTIONS").is_some() || var("GITHUB_RUN_ID").is_some() {
        return github(&var, &from_source, &finished);
    }
    if var("TF_BUILD").is_some() || var("BUILD_BUILDID").is_some() {
        let started = var("SYSTEM_PIPELINESTARTTIME")
            .and_then(|t| DateTime::parse_from_str(&t, "%Y-%m-%d %H:%M:%S%:z").ok())
            .map(|t| t.with_timezone(&Utc).to_rfc3339_opts(SecondsFormat::Secs, true))
            .unwrap_or_else(|| finished.clone());
        return azure(&var, &from_source, &started, &finished);
    }
    Err(MissingProvenance(
        "neither Azure Pipelines' (BUILD_BUILDID, …) nor GitHub Actions' (GITHUB_RUN_ID, …) variables are set".into(),
    ))
}

fn require(var: &dyn Fn(&str) -> Option<String>, names: &[&str]) -> Result<Vec<String>, MissingProvenance> {
    let missing: Vec<&str> = names.iter().copied().filter(|n| var(n).is_none()).collect();
    if !missing.is_empty() {
        return Err(MissingProvenance(format!("{} not set", missing.join(", "))));
    }
    Ok(names.iter().map(|n| var(n).unwrap_or_default()).collect())
}

fn azure(
    var: &dyn Fn(&str) -> Option<String>,
    source: &dyn Fn(&str) -> Option<String>,
    started: &str,
    finished: &str,
) -> Result<Value, MissingProvenance> {
    let values = require(
        var,
        &[
            "SYSTEM_COLLECTIONURI",
            "SYSTEM_TEAMPROJECT",
            "BUILD_DEFINITIONNAME",
            "BUILD_BUILDID",
        ],
    )?;
    let [collection, project, definition, build] = <[String; 4]>::try_from(values).expect("four values");
    let repository = source("repository")
        .or_else(|| var("BUILD_REPOSITORY_URI"))
        .ok_or_else(|| {
            MissingProvenance("BUILD_REPOSITORY_URI is not set and the record has no source".into())
        })?;
    let commit = source("commit")
        .or_else(|| var("BUILD_SOURCEVERSION"))
        .ok_or_else(|| {
            MissingProvenance("BUILD_SOURCEVERSION is not set and the record has no source".into())
        })?;
    let reference = var("BUILD_SOURCEBRANCH").unwrap_or_default();
    let base = format!("{}/{project}", collection.trim_end_matches('/'));
    let pipeline = match var("SYSTEM_DEFINITIONID") {
        Some(id) => format!("{base}/_build?definitionId={id}"),
        None => format!("{base}/_build?definitionName={definition}"),
    };
    let mut run = format!("{base}/_build/results?buildId={build}");
    if let Some(job) = var("SYSTEM_JOBID") {
        run.push_str(&format!("&j={job}"));
    }
    Ok(provenance(
        AZURE_PIPELINES_BUILD_TYPE,
        json!({"repository": repository, "ref": reference, "pipeline": definition}),
        (&repository, &reference, &commit),
        (&pipeline, &run),
        (started, finished),
    ))
}

fn github(
    var: &dyn Fn(&str) -> Option<String>,
    source: &dyn Fn(&str) -> Option<String>,
    finished: &str,
) -> Result<Value, MissingProvenance> {
    let values = require(
        var,
        &["GITHUB_REPOSITORY", "GITHUB_RUN_ID", "GITHUB_WORKFLOW_REF"],
    )?;
    let [repository_name, run_id, workflow_ref] = <[String; 3]>::try_from(values).expect("three values");
    let server = var("GITHUB_SERVER_URL").unwrap_or_else(|| "https://github.com".into());
    let server = server.trim_end_matches('/');
    let repository = source("repository").unwrap_or_else(|| format!("{server}/{repository_name}"));
    let commit = source("commit")
        .or_else(|| var("GITHUB_SHA"))
        .ok_or_else(|| MissingProvenance("GITHUB_SHA is not set and the record has no source".into()))?;
    let reference = var("GITHUB_REF").unwrap_or_default();
    // owner/repo/.github/workflows/build.yml@refs/heads/main
    let path = workflow_ref
        .split_once('@')
        .map(|(path, _)| path)
        .unwrap_or(&workflow_ref)
        .strip_prefix(&format!("{repository_name}/"))
        .unwrap_or_default()
        .to_string();
    let attempt = var("GITHUB_RUN_ATTEMPT").unwrap_or_else(|| "1".into());
    let run = format!("{server}/{repository_name}/actions/runs/{run_id}/attempts/{attempt}");
    let builder = format!("{server}/{workflow_ref}");
    Ok(provenance(
        GITHUB_WORKFLOW_BUILD_TYPE,
        json!({"workflow": {"ref": reference, "repository": repository, "path": path}}),
        (&repository, &reference, &commit),
        (&builder, &run),
        (finished, finished),
    ))
}

fn provenance(
    build_type: &str,
    external: Value,
    (repository, reference, commit): (&str, &str, &str),
    (builder, run): (&str, &str),
    (started, finished): (&str, &str),
) -> Value {
    let uri = if reference.is_empty() {
        format!("git+{repository}")
    } else {
        format!("git+{repository}@{reference}")
    };
    json!({
        "buildDefinition": {
            "buildType": build_type,
            "externalParameters": external,
            "resolvedDependencies": [{"uri": uri, "digest": {"gitCommit": commit}}],
        },
        "runDetails": {
            "builder": {"id": builder},
            "metadata": {"invocationId": run, "startedOn": started, "finishedOn": finished},
        },
    })
}

/// What a provenance predicate (v1, or v0.2) says of its source commit and
/// builder, for `os-verify`'s checks.
pub fn commit_and_builder(predicate: &Value) -> (Option<String>, Option<String>) {
    let text = |pointer: &str| {
        predicate
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let commit_of = |list: Option<&Value>| {
        list.and_then(Value::as_array)?.iter().find_map(|d| {
            d.pointer("/digest/gitCommit")
                .or_else(|| d.pointer("/digest/sha1"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
    };
    let commit = commit_of(predicate.pointer("/buildDefinition/resolvedDependencies"))
        .or_else(|| commit_of(predicate.get("materials")));
    let builder = text("/runDetails/builder/id").or_else(|| text("/builder/id"));
    (commit, builder)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::source::env_of;

    #[test]
    fn azure_pipelines_provenance_names_the_commit_the_pipeline_and_the_run() {
        let env = env_of(&[
            ("TF_BUILD", "True"),
            ("SYSTEM_COLLECTIONURI", "https://dev.azure.com/onestream/"),
            ("SYSTEM_TEAMPROJECT", "platform"),
            ("BUILD_DEFINITIONNAME", "iam-ci"),
            ("SYSTEM_DEFINITIONID", "7"),
            ("BUILD_BUILDID", "4242"),
            ("SYSTEM_JOBID", "job-1"),
            (
                "BUILD_REPOSITORY_URI",
                "https://dev.azure.com/onestream/platform/_git/iam",
            ),
            ("BUILD_SOURCEVERSION", "9f1e2d3c4b5a69788796a5b4c3d2e1f009182736"),
            ("BUILD_SOURCEBRANCH", "refs/heads/main"),
            ("SYSTEM_PIPELINESTARTTIME", "2026-12-03 10:00:00+00:00"),
        ]);
        let now = DateTime::parse_from_rfc3339("2026-12-03T10:05:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let p = from_ci(&env, None, now).unwrap();
        assert_eq!(p["buildDefinition"]["buildType"], AZURE_PIPELINES_BUILD_TYPE);
        assert_eq!(p["buildDefinition"]["externalParameters"]["pipeline"], "iam-ci");
        assert_eq!(
            p["runDetails"]["builder"]["id"],
            "https://dev.azure.com/onestream/platform/_build?definitionId=7"
        );
        assert_eq!(
            p["runDetails"]["metadata"]["invocationId"],
            "https://dev.azure.com/onestream/platform/_build/results?buildId=4242&j=job-1"
        );
        assert_eq!(p["runDetails"]["metadata"]["startedOn"], "2026-12-03T10:00:00Z");
        let (commit, builder) = commit_and_builder(&p);
        assert_eq!(
            commit.as_deref(),
            Some("9f1e2d3c4b5a69788796a5b4c3d2e1f009182736")
        );
        assert!(builder.unwrap().ends_with("definitionId=7"));
    }

    #[test]
    fn github_provenance_follows_githubs_build_type_and_outside_ci_names_what_is_missing() {
        let env = env_of(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_REPOSITORY", "onestream/iam"),
            ("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567"),
            ("GITHUB_REF", "refs/heads/main"),
            (
                "GITHUB_WORKFLOW_REF",
                "onestream/iam/.github/workflows/build.yml@refs/heads/main",
            ),
            ("GITHUB_RUN_ID", "77"),
            ("GITHUB_RUN_ATTEMPT", "2"),
        ]);
        let p = from_ci(&env, None, Utc::now()).unwrap();
        assert_eq!(
            p["buildDefinition"]["externalParameters"]["workflow"]["path"],
            ".github/workflows/build.yml"
        );
        assert_eq!(
            p["runDetails"]["metadata"]["invocationId"],
            "https://github.com/onestream/iam/actions/runs/77/attempts/2"
        );
        let missing = from_ci(&env_of(&[("GITHUB_ACTIONS", "true")]), None, Utc::now()).unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("GITHUB_REPOSITORY, GITHUB_RUN_ID, GITHUB_WORKFLOW_REF not set")
        );
        let outside = from_ci(&env_of(&[]), None, Utc::now()).unwrap_err();
        assert!(outside.to_string().contains("give --predicate FILE outside CI"));
    }
}
