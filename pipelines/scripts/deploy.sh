#!/usr/bin/env bash
# Deploy step: pin the manifests to the verified digests and apply them to
# the cluster (or commit them to a GitOps repository). Governance gate first:
# only records verified where they now live, and only by digest.
set -euo pipefail
# shellcheck source=pipelines/scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
os_step deploy

usage() {
  cat <<'USAGE'
usage: deploy.sh --mode apply --manifests DIR --namespace NS [--timeout 5m]
                 [--aks-resource-group RG --aks-cluster NAME] --in FILE --out FILE
       deploy.sh --mode gitops --repo DIR --path PATH [--push] --in FILE --out FILE
       deploy.sh --mode render --manifests DIR --rendered FILE --in FILE --out FILE

Refuses (exit 1, nothing deployed, os-deploy not even started) when a record
  - is an error record,
  - has no digest (a tag-only deploy), or
  - was not verified for the image it names now (its last verify event is missing,
    failed, or for another registry: the image moved after verification).

  apply   os-deploy apply DIR --namespace NS --timeout T < IN > OUT
          (with --aks-*: az aks get-credentials, then kubelogin convert-kubeconfig -l azurecli)
  gitops  os-deploy gitops --repo DIR --path PATH [--push] < IN > OUT
  render  os-deploy render DIR --records-out OUT < IN > RENDERED
USAGE
}

mode="" manifests="" namespace="" timeout=5m repo="" path="" push=() rendered="" in="" out=""
aks_group="" aks_cluster=""
while [ "$#" -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --mode) os_need_value "$1" "$#"; mode=$2; shift 2 ;;
    --manifests) os_need_value "$1" "$#"; manifests=$2; shift 2 ;;
    --namespace) os_need_value "$1" "$#"; namespace=$2; shift 2 ;;
    --timeout) os_need_value "$1" "$#"; timeout=$2; shift 2 ;;
    --aks-resource-group) os_need_value "$1" "$#"; aks_group=$2; shift 2 ;;
    --aks-cluster) os_need_value "$1" "$#"; aks_cluster=$2; shift 2 ;;
    --repo) os_need_value "$1" "$#"; repo=$2; shift 2 ;;
    --path) os_need_value "$1" "$#"; path=$2; shift 2 ;;
    --push) push=(--push); shift ;;
    --rendered) os_need_value "$1" "$#"; rendered=$2; shift 2 ;;
    --in) os_need_value "$1" "$#"; in=$2; shift 2 ;;
    --out) os_need_value "$1" "$#"; out=$2; shift 2 ;;
    *) os_usage_error "unknown argument $1" ;;
  esac
done
os_require --in "$in" --out "$out"
case $mode in
  apply) os_require --manifests "$manifests" --namespace "$namespace" ;;
  gitops) os_require --repo "$repo" --path "$path" ;;
  render) os_require --manifests "$manifests" --rendered "$rendered" ;;
  *) os_usage_error "--mode must be apply, gitops or render" ;;
esac

mkdir -p "$(dirname "$out")"

# The governance gate. os-deploy has its own (a verify event for the current
# image and digest); checking here too means a pipeline stops before it
# touches a cluster credential.
os_check_records "$in"
refused=$(jq -r '
  def refusal:
    if (.digest // "" | test("^sha256:[0-9a-f]{64}$") | not) then "no digest: a tag-only deploy is not allowed"
    else ([.history[]? | select(.step == "verify")] | last) as $verified
      | if $verified == null then "never verified"
        elif $verified.verified != true then "its last verification failed"
        elif $verified.image != .image then "verified at \($verified.image), but it now lives at \(.image)"
        else empty end
    end;
  select(refusal) | "\(.service // "?") \(.image // "?")@\(.digest // "no digest"): \(refusal)"' "$in")
[ -z "$refused" ] || os_die "refusing to deploy:"$'\n'"$refused"

case $mode in
  apply)
    if [ -n "$aks_cluster" ]; then
      az aks get-credentials --resource-group "$aks_group" --name "$aks_cluster" --overwrite-existing >&2
      kubelogin convert-kubeconfig -l azurecli >&2
    fi
    os-deploy apply "$manifests" --namespace "$namespace" --timeout "$timeout" <"$in" >"$out" ||
      os_die "os-deploy apply exited $?; records in $out"
    ;;
  gitops)
    os-deploy gitops --repo "$repo" --path "$path" "${push[@]}" <"$in" >"$out" ||
      os_die "os-deploy gitops exited $?; records in $out"
    ;;
  render)
    os-deploy render "$manifests" --records-out "$out" <"$in" >"$rendered" ||
      os_die "os-deploy render exited $?; records in $out"
    ;;
esac
os_check_records "$out"
os_log "$(jq -r '"\(.service) \(.image)@\(.digest) deployed"' "$out")"
