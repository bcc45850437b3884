//! The `source` of an artifact (commit, repository, run): from flags, else
//! from the CI system the tool runs in, so the record links the image back
//! to the commit that built it without any pipeline plumbing.

use serde_json::{Map, Value};

/// What the user passed explicitly; each field falls back to the CI
/// environment on its own.
#[derive(Debug, Default, Clone)]
pub struct SourceFlags {
    pub commit: Option<String>,
    pub repository: Option<String>,
    pub run: Option<String>,
}

/// Reads a variable, treating unset and empty alike.
fn var(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    env(name).filter(|v| !v.is_empty())
}

/// `source` from flags and the environment, or `None` when nothing is
/// known. `env` is injectable for tests; tools pass `std::env::var`.
pub fn detect(flags: &SourceFlags, env: &dyn Fn(&str) -> Option<String>) -> Option<Map<String, Value>> {
    // Azure Pipelines and GitHub Actions each set all three; a machine with
    // both (a self-hosted runner inside another CI) prefers the explicit
    // marker of the one actually running.
    let azure = var(env, "TF_BUILD").is_some() || var(env, "BUILD_SOURCEVERSION").is_some();
    let github = var(env, "GITHUB_ACTIONS").is_some() || var(env, "GITHUB_SHA").is_some();
    let (commit, repository, run) = if azure {
        (
            var(env, "BUILD_SOURCEVERSION"),
            var(env, "BUILD_REPOSITORY_URI"),
            var(env, "BUILD_BUILDNUMBER").or_else(|| var(env, "BUILD_BUILDID")),
        )
    } else if github {
        let server = var(env, "GITHUB_SERVER_URL").unwrap_or_else(|| "https://github.com".into());
        (
            var(env, "GITHUB_SHA"),
            var(env, "GITHUB_REPOSITORY").map(|repo| format!("{}/{repo}", server.trim_end_matches('/'))),
            var(env, "GITHUB_RUN_ID"),
        )
    } else {
        (None, None, None)
    };
    let mut source = Map::new();
    for (name, flag, detected) in [
        ("commit", &flags.commit, commit),
        ("repository", &flags.repository, repository),
        ("run", &flags.run, run),
    ] {
        if let Some(value) = flag.clone().or(detected) {
            source.insert(name.into(), value.into());
        }
    }
    (!source.is_empty()).then_some(source)
}

/// The URL of the CI run this process is part of (Azure Pipelines' build
/// results page, GitHub Actions' run page), when the variables say.
pub fn run_url(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    if let (Some(collection), Some(project), Some(build)) = (
        var(env, "SYSTEM_COLLECTIONURI"),
        var(env, "SYSTEM_TEAMPROJECT"),
        var(env, "BUILD_BUILDID"),
    ) {
        let collection = collection.trim_end_matches('/');
        return Some(format!("{collection}/{project}/_build/results?buildId={build}"));
    }
    let (repository, run) = (var(env, "GITHUB_REPOSITORY")?, var(env, "GITHUB_RUN_ID")?);
    let server = var(env, "GITHUB_SERVER_URL").unwrap_or_else(|| "https://github.com".into());
    Some(format!(
        "{}/{repository}/actions/runs/{run}",
        server.trim_end_matches('/')
    ))
}

/// An environment made of `pairs`, for tests of what CI variables say.
#[cfg(test)]
pub(crate) fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_pipelines_variables() {
        let env = env_of(&[
            ("TF_BUILD", "True"),
            ("BUILD_SOURCEVERSION", "9f1e"),
            ("BUILD_REPOSITORY_URI", "https://dev.azure.com/o/p/_git/iam"),
            ("BUILD_BUILDNUMBER", "20261125.3"),
            ("BUILD_BUILDID", "812"),
        ]);
        let source = detect(&SourceFlags::default(), &env).unwrap();
        assert_eq!(source["commit"], "9f1e");
        assert_eq!(source["repository"], "https://dev.azure.com/o/p/_git/iam");
        assert_eq!(source["run"], "20261125.3");
    }

    #[test]
    fn github_actions_variables_and_flags_win() {
        let env = env_of(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_SHA", "abc"),
            ("GITHUB_REPOSITORY", "onestream/iam"),
            ("GITHUB_RUN_ID", "77"),
        ]);
        let flags = SourceFlags {
            commit: Some("override".into()),
            ..SourceFlags::default()
        };
        let source = detect(&flags, &env).unwrap();
        assert_eq!(source["commit"], "override");
        assert_eq!(source["repository"], "https://github.com/onestream/iam");
        assert_eq!(source["run"], "77");
    }

    #[test]
    fn nothing_known_means_no_source() {
        assert!(detect(&SourceFlags::default(), &env_of(&[])).is_none());
    }
}
