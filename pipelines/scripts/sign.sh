#!/usr/bin/env bash
# Sign step: cosign-compatible signatures of each record's digest, stored
# next to the image in the dev registry.
set -euo pipefail
# shellcheck source=pipelines/scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
os_step sign

usage() {
  cat <<'USAGE'
usage: sign.sh --key KEY [--azure-credential KIND] [-a KEY=VALUE]... --in FILE --out FILE

  --key KEY                azurekms://VAULT_HOST/KEY (Azure Key Vault or Managed HSM signs; the
                           private key never leaves it), a cosign key file (COSIGN_PASSWORD), or env://VAR
  --azure-credential KIND  how os-sign reaches Key Vault: azure-cli (inside AzureCLI@2 or after
                           azure/login), workload-identity, managed-identity, environment, auto
                           (default: auto). With workload-identity inside AzureCLI@2
                           (addSpnToEnvironment: true), the task's idToken, servicePrincipalId and
                           tenantId become AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID, AZURE_TENANT_ID.
  -a, --annotation K=V     signed along (repeatable); os-verify can require it
  --in FILE / --out FILE   records from the build step / for the promote step

Runs: os-sign --key KEY --azure-credential KIND [-a K=V]... < IN > OUT
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

# AzureCLI@2 with addSpnToEnvironment hands the federated token over as a
# variable; os-sign's workload-identity credential reads it from a file.
if [ "$credential" = workload-identity ] && [ -z "${AZURE_FEDERATED_TOKEN_FILE:-}" ] && [ -n "${idToken:-}" ]; then
  token_dir=$(mktemp -d)
  trap 'rm -rf -- "$token_dir"' EXIT
  (umask 077 && printf '%s' "$idToken" >"$token_dir/token")
  export AZURE_FEDERATED_TOKEN_FILE=$token_dir/token
  export AZURE_CLIENT_ID=${AZURE_CLIENT_ID:-${servicePrincipalId:-}}
  export AZURE_TENANT_ID=${AZURE_TENANT_ID:-${tenantId:-}}
fi

os_acr_login_records "$in"
os-sign --key "$key" --azure-credential "$credential" "${annotations[@]}" <"$in" >"$out" ||
  os_die "os-sign exited $?; records in $out"
os_check_records "$out"
os_log "$(jq -r '"\(.service) \(.digest) signed by \(.history[-1].signer) (\(.history[-1].keyId))"' "$out")"
