#!/usr/bin/env bash
# Build step: capture the digest of what the build made and put it in the
# dev registry, as one artifact record.
set -euo pipefail
# shellcheck source=pipelines/scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
os_step build

usage() {
  cat <<'USAGE'
usage: build.sh --service NAME --registry REGISTRY/PREFIX --tag TAG (--layout DIR | --pushed) --out FILE

  --layout DIR   the build wrote an OCI image layout (buildah push oci:DIR, docker buildx
                 --output type=oci, kaniko --oci-layout-path) holding TAG:
                   os-digest --service NAME oci:DIR:TAG | os-import --to-repo REGISTRY/PREFIX/NAME
                 (the same bytes, digest unchanged, tagged TAG in the registry)
  --pushed       the build pushed REGISTRY/PREFIX/NAME:TAG itself:
                   os-digest --service NAME REGISTRY/PREFIX/NAME:TAG
  --out FILE     where the record goes (one JSON line; input of the sign step)

The source commit, repository and run come from the CI variables (see os-digest).
Exits 1 when a tool fails (its error record is in FILE), 2 on usage errors.
USAGE
}

service="" registry="" tag="" layout="" pushed=0 out=""
while [ "$#" -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --service) os_need_value "$1" "$#"; service=$2; shift 2 ;;
    --registry) os_need_value "$1" "$#"; registry=${2%/}; shift 2 ;;
    --tag) os_need_value "$1" "$#"; tag=$2; shift 2 ;;
    --layout) os_need_value "$1" "$#"; layout=$2; shift 2 ;;
    --pushed) pushed=1; shift ;;
    --out) os_need_value "$1" "$#"; out=$2; shift 2 ;;
    *) os_usage_error "unknown argument $1" ;;
  esac
done
os_require --service "$service" --registry "$registry" --tag "$tag" --out "$out"
[ -n "$layout" ] || [ "$pushed" -eq 1 ] || os_usage_error "give --layout DIR or --pushed"
[ -z "$layout" ] || [ "$pushed" -eq 0 ] || os_usage_error "--layout and --pushed exclude each other"

repository=$registry/$service
mkdir -p "$(dirname "$out")"
os_acr_login "$registry"
if [ -n "$layout" ]; then
  [ -f "$layout/index.json" ] || os_die "$layout is not an OCI image layout (no index.json)"
  set +e
  os-digest --service "$service" "oci:$layout:$tag" | os-import --to-repo "$repository" >"$out"
  statuses=("${PIPESTATUS[@]}")
  set -e
  [ "${statuses[*]}" = "0 0" ] || os_die "os-digest | os-import exited ${statuses[*]}; records in $out"
else
  os-digest --service "$service" "$repository:$tag" >"$out" || os_die "os-digest exited $?; records in $out"
fi
os_check_records "$out"
os_log "$(jq -r '"\(.service) \(.image)@\(.digest)"' "$out")"
