#!/usr/bin/env bash
# Install step: the pinned tools on a CI agent, on PATH for the job's later
# steps. Both the Azure template (install-tools.yml) and the GitHub workflow run it.
set -euo pipefail
# shellcheck source=pipelines/scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
os_step install-tools

usage() {
  cat <<'USAGE'
usage: install-tools-ci.sh [--help]

Reads the pin from the environment (Azure: templates/tools.yml; GitHub: the workflow's env):
  OS_TOOLS_VERSION   the version to install (required)
  OS_TOOLS_SHA256    SHA-256 of the release tarball; empty: build from this checkout
                     (scripts/install-tools --from-source), which the pipeline checked out
                     at the pinned tag
  OS_TOOLS_TARBALL   the tarball, already downloaded (Azure: the UniversalPackages task);
                     unset on GitHub: gh release download OS_TOOLS_REF from
                     OS_TOOLS_REPOSITORY (default onestream/toolchain)
  OS_TOOLS_PREFIX    where to install (default: $RUNNER_TOOL_CACHE or $AGENT_TOOLSDIRECTORY
                     or $HOME/.local, then /onestream/VERSION)

Then puts PREFIX/bin on PATH for later steps: ##vso[task.prependpath] on Azure
Pipelines, a line in $GITHUB_PATH on GitHub Actions.
USAGE
}
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) os_usage_error "unknown argument $1" ;;
esac

toolchain=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
version=${OS_TOOLS_VERSION:-}
[ -n "$version" ] || os_usage_error "OS_TOOLS_VERSION is not set"
tools_dir=${RUNNER_TOOL_CACHE:-${AGENT_TOOLSDIRECTORY:-$HOME/.local}}
prefix=${OS_TOOLS_PREFIX:-$tools_dir/onestream/$version}

if [ -n "${OS_TOOLS_SHA256:-}" ]; then
  tarball=${OS_TOOLS_TARBALL:-}
  if [ -z "$tarball" ]; then
    download=$(mktemp -d)
    trap 'rm -rf -- "$download"' EXIT
    gh release download "${OS_TOOLS_REF:-v$version}" --repo "${OS_TOOLS_REPOSITORY:-onestream/toolchain}" \
      --pattern "onestream-tools-$version-x86_64-linux.tar.gz" --dir "$download" >&2 ||
      os_die "could not download the onestream-tools $version release tarball"
    tarball=$download/onestream-tools-$version-x86_64-linux.tar.gz
  fi
  "$toolchain/scripts/install-tools" --tarball "$tarball" --sha256 "$OS_TOOLS_SHA256" \
    --version "$version" --prefix "$prefix"
else
  "$toolchain/scripts/install-tools" --from-source --version "$version" --prefix "$prefix"
fi

if [ "${TF_BUILD:-}" = True ] || [ "${TF_BUILD:-}" = true ]; then
  echo "##vso[task.prependpath]$prefix/bin"
elif [ -n "${GITHUB_PATH:-}" ]; then
  echo "$prefix/bin" >>"$GITHUB_PATH"
fi
os_log "onestream-tools $version in $prefix/bin"
