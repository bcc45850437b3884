#!/usr/bin/env bash
# Verify step: check each record's signature where the image lives now.
# The deploy step refuses records whose last verification is not for their
# current image and digest, so this runs right before it.
set -euo pipefail
# shellcheck source=pipelines/scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
os_step verify

usage() {
  cat <<'USAGE'
usage: verify.sh --key PUBLIC_KEY [--azure-credential KIND] [-a KEY=VALUE]... --in FILE --out FILE

  --key PUBLIC_KEY         cosign.pub, or azurekms://VAULT_HOST/KEY (then --azure-credential)
  -a, --annotation K=V     the signature must carry it (repeatable)
  --in FILE / --out FILE   records to verify / verified records

Runs: os-verify --key PUBLIC_KEY --azure-credential KIND [-a K=V]... < IN > OUT
USAGE
}

key="" credential=auto in="" out="" annotations=()
while [ "$#" -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --key) os_need_value "$1" "$#"; key=$2; shift 2 ;;
    --azure-credential) os_need_value "$1" "$#"; credential=$2; shift 2 ;;
    -a | --annotation) os_need_value "$1" "$#"; annotations+=(-a "$2"); shift 2 ;;
    --in) os_need_value "$1" "$#"; in=$2; shift 2 ;;
    --out) os_need_value "$1" "$#"; out=$2; shift 2 ;;
    *) os_usage_error "unknown argument $1" ;;
  esac
done
os_require --key "$key" --in "$in" --out "$out"
os_check_records "$in"
mkdir -p "$(dirname "$out")"

os_acr_login_records "$in"
os-verify --key "$key" --azure-credential "$credential" "${annotations[@]}" <"$in" >"$out" ||
  os_die "os-verify exited $?; records in $out"
os_check_records "$out"
os_log "$(jq -r '"\(.service) \(.image)@\(.digest) verified (\(.history[-1].keyId))"' "$out")"
