#!/usr/bin/env bash
# Promote step: copy the same bytes (and their signatures) into the next
# registry, then verify the signature there before anything may use it.
set -euo pipefail
# shellcheck source=pipelines/scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
os_step promote

usage() {
  cat <<'USAGE'
usage: promote.sh --to REGISTRY/PREFIX --key PUBLIC_KEY [--azure-credential KIND]
                  [--via copy|acr-import|auto] [-a KEY=VALUE]... --in FILE --out FILE

  --to REGISTRY/PREFIX     the stage's registry: the image goes to REGISTRY/PREFIX/<service repo>
  --key PUBLIC_KEY         cosign.pub, or azurekms://VAULT_HOST/KEY (then --azure-credential)
  --via WAY                how os-import moves the bytes (default auto: ACR's server-side
                           import when the stage's registry is an ACR of the subscription,
                           AZURE_SUBSCRIPTION_ID or az's current one; else a client copy)
  -a, --annotation K=V     the signature must carry it (repeatable)
  --in FILE / --out FILE   records from the previous stage / for the next

Runs: os-import --to REGISTRY/PREFIX --via WAY < IN | os-verify --key PUBLIC_KEY [-a K=V]... > OUT
A record that does not verify in the new registry leaves as an error record and the step fails.
USAGE
}

to="" key="" credential=auto via=auto in="" out="" annotations=()
while [ "$#" -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --to) os_need_value "$1" "$#"; to=${2%/}; shift 2 ;;
    --key) os_need_value "$1" "$#"; key=$2; shift 2 ;;
    --azure-credential) os_need_value "$1" "$#"; credential=$2; shift 2 ;;
    --via) os_need_value "$1" "$#"; via=$2; shift 2 ;;
    -a | --annotation) os_need_value "$1" "$#"; annotations+=(-a "$2"); shift 2 ;;
    --in) os_need_value "$1" "$#"; in=$2; shift 2 ;;
    --out) os_need_value "$1" "$#"; out=$2; shift 2 ;;
    *) os_usage_error "unknown argument $1" ;;
  esac
done
os_require --to "$to" --key "$key" --in "$in" --out "$out"
os_check_records "$in"
mkdir -p "$(dirname "$out")"

os_acr_login_records "$in" "$to"
# In the AzureCLI@2 task the subscription is the service connection's.
if [ "$via" != copy ] && [ -z "${AZURE_SUBSCRIPTION_ID:-}" ] && command -v az >/dev/null 2>&1; then
  AZURE_SUBSCRIPTION_ID=$(az account show --query id -o tsv 2>/dev/null) || AZURE_SUBSCRIPTION_ID=""
  export AZURE_SUBSCRIPTION_ID
fi
set +e
os-import --to "$to" --via "$via" --azure-credential "$credential" <"$in" |
  os-verify --key "$key" --azure-credential "$credential" "${annotations[@]}" >"$out"
statuses=("${PIPESTATUS[@]}")
set -e
[ "${statuses[*]}" = "0 0" ] || os_die "os-import | os-verify exited ${statuses[*]}; records in $out"
os_check_records "$out"
os_log "$(jq -r '"\(.service) \(.image)@\(.digest) imported and verified"' "$out")"
