# shellcheck shell=bash
# scripts/bench acr: ACR's server-side import. 5 images x 2 layers x 64 MiB,
# each signed by cosign (a .sig), attested (an .att, SLSA provenance) and
# with an OCI 1.1 referrer, promoted dev -> prod by
#
#   acr-import  os-import --via acr-import (the target ACR copies the image,
#               os-import carries the attachments),
#   copy        os-import --via copy (every blob through the agent),
#   peer        what a team scripts today: per image, `az acr import`'s
#               semantics (curl: an Entra token once, POST importImage,
#               poll its Location to 200) then `cosign copy --only=sig,att,sbom`
#               for the signatures,
#
# and a re-run (again: os-import --via acr-import onto a prod that has it
# all). What is compared is what passes through the agent: the bytes and
# the requests. Wall time is shown, but the server-side copy is the
# stand-in's own (os_testkit::arm, not ACR's), and its imports answer
# Retry-After: ACR_RETRY_AFTER, so it is not a target.
#
# Fixtures from os-testkit's bench-env (scripts/lib/harness.sh): `bench-env
# registries --acr dev=devacr --acr prod=prodacr dev prod` starts both
# registries, a counting proxy in front of each, and the Resource Manager
# stand-in fronting them as ACRs: its loginServers are the proxies (the
# agent goes through them), its own copy goes to the registries directly.
# dev is filled once (bench-env push-set; signed by cosign before the
# timers). Before every run of every contender, in hyperfine's --prepare,
# the run before is checked, prod is replaced by a fresh registry (bench-env
# restart prod: a new proxy and a new stand-in with it, at new addresses),
# for again filled by os-import --via acr-import, and the counters zeroed
# (bench-env reset); right after the run, before any check, they are read
# (bench-env counters, bench-env log). Timed by hyperfine.
#
# Sourced by scripts/bench after its helpers (say, RUNS, the release build's
# BIN and OS_DIGEST); uses harness_*, hf_* and us_ms from
# scripts/lib/harness.sh and reg_* from scripts/lib/registry.sh. Defines
# bench_acr.
#
# Variables set here are read across functions:
# shellcheck disable=SC2034

ACR_N=5
ACR_LAYER_SIZE=$((64 * 1024 * 1024))
ACR_TAG=1.0.0
ACR_PASSWORD=bench-acr-password
ACR_PREFIX=bench/acr
ACR_API_VERSION=2025-11-01
ACR_RESOURCE=https://management.azure.com
# The Retry-After (seconds) of the stand-in's accepted imports and their
# polls, which both os-import and the peer honour. Its default, 0, makes a
# client that honours it poll back to back; real ARM asks for a pause.
ACR_RETRY_AFTER=1
ACR_KEYS=(acr-import copy peer again)

acr_cosign() { HOME=$ACR_HOME COSIGN_PASSWORD=$ACR_PASSWORD cosign "$@" </dev/null; }

# --- the fixtures -------------------------------------------------------------

# acr_set: the images pushed to dev (directly: set-up is not the agent's),
# ACR_WORK/set ("REPO DIGEST" lines) and ACR_WORK/records (os-digest's, of
# the images as the agent sees them: through dev's proxy), checked against
# the pushed digests.
acr_set() {
  "$BIN/bench-env" push-set --host "$ACR_DEV" --prefix "$ACR_PREFIX" --count "$ACR_N" --tag "$ACR_TAG" \
    --layer "acr-@-1:$ACR_LAYER_SIZE" --layer "acr-@-2:$ACR_LAYER_SIZE" \
    >"$ACR_WORK/set" 2>"$ACR_WORK/push.err" ||
    reg_die "bench-env push-set failed: $(tail -n 3 "$ACR_WORK/push.err")"
  local repo digest
  while read -r repo digest; do
    printf '%s/%s:%s\n' "$ACR_DEV_PROXY" "$repo" "$ACR_TAG"
  done <"$ACR_WORK/set" | "$OS_DIGEST" >"$ACR_WORK/records" 2>"$ACR_WORK/digest.err" ||
    reg_die "os-digest failed: $(tail -n 3 "$ACR_WORK/digest.err")"
  jq -r '.digest' "$ACR_WORK/records" | cmp -s - <(cut -d' ' -f2 "$ACR_WORK/set") ||
    reg_die "os-digest's digests differ from the pushed ones:"$'\n'"$(head -n 3 "$ACR_WORK/records")"
}

# acr_sign: every image signed (.sig), attested (.att: SLSA provenance) and
# given an OCI 1.1 referrer (a second signature, annotated via=referrer;
# distribution has no Referrers API, so cosign writes the sha256-<hex>
# tag-fallback index), at dev directly. Writes ACR_WORK/referrers ("REPO
# REFERRER-DIGEST" lines).
acr_sign() {
  local images=() common=(--yes --key "$ACR_KEY.key" --tlog-upload=false --allow-http-registry) log=$ACR_WORK/sign.log
  mapfile -t images < <(awk -v host="$ACR_DEV" '{ print host "/" $1 "@" $2 }' "$ACR_WORK/set")
  printf '%s\n' '{"buildType":"https://ci.example.com/build/v1","builder":{"id":"https://ci.example.com"}}' \
    >"$ACR_WORK/provenance.json"
  acr_cosign sign "${common[@]}" "${images[@]}" >"$log" 2>&1 ||
    reg_die "cosign sign failed: $(tail -n 5 "$log")"
  acr_cosign attest "${common[@]}" --type slsaprovenance --predicate "$ACR_WORK/provenance.json" "${images[@]}" >"$log" 2>&1 ||
    reg_die "cosign attest failed: $(tail -n 5 "$log")"
  COSIGN_EXPERIMENTAL=1 acr_cosign sign "${common[@]}" --registry-referrers-mode=oci-1-1 -a via=referrer "${images[@]}" \
    >"$log" 2>&1 || reg_die "cosign sign (oci-1-1) failed: $(tail -n 5 "$log")"
  local repo digest index referrer suffix
  while read -r repo digest; do
    for suffix in sig att; do
      curl -fsS -o /dev/null -H "Accept: $REG_ACCEPT" "http://$ACR_DEV/v2/$repo/manifests/sha256-${digest#sha256:}.$suffix" ||
        reg_die "no .$suffix for $repo@$digest after cosign"
    done
    index=$(curl -fsS -H "Accept: $REG_OCI_INDEX" "http://$ACR_DEV/v2/$repo/manifests/sha256-${digest#sha256:}") ||
      reg_die "no referrers tag-fallback index for $repo@$digest after cosign sign --registry-referrers-mode=oci-1-1"
    referrer=$(jq -r '.manifests[0].digest // empty' <<<"$index")
    [ -n "$referrer" ] || reg_die "the referrers index of $repo@$digest is empty: $index"
    printf '%s %s\n' "$repo" "$referrer"
  done <"$ACR_WORK/set" >"$ACR_WORK/referrers"
}

# acr_fresh_prod: bench-env replaces prod, its proxy and the stand-in (from
# hyperfine's --prepare too); sets ACR_PROD, ACR_PROD_PROXY, ACR_ARM.
acr_fresh_prod() {
  local -A HARNESS=()
  harness_restart prod
  ACR_PROD=${HARNESS[prod_host]}
  ACR_PROD_PROXY=${HARNESS[prod_proxy]}
  ACR_ARM=${HARNESS[arm_endpoint]}
  if [ -z "$ACR_PROD_PROXY" ] || [ -z "$ACR_ARM" ]; then
    reg_die "bench-env restart prod named no proxy or stand-in"
  fi
}

# acr_counters FILE: bench-env's counters (KEY=VALUE lines) into FILE.
acr_counters() {
  "$BIN/bench-env" counters --control "$HARNESS_CONTROL" >"$1" || reg_die "bench-env counters failed"
}
acr_reset() {
  "$BIN/bench-env" reset --control "$HARNESS_CONTROL" >/dev/null || reg_die "bench-env reset failed"
}

# --- the contenders -------------------------------------------------------------
# Each dies with the tool's own words if it fails. They read the run's
# prod proxy, prefix and stand-in from $ACR_WORK/run.

# acr_os_import OUT ARM PROXY PREFIX VIA: os-import, the records on stdin,
# the stand-in's Azure environment (a service principal's, as in CI).
acr_os_import() {
  local out=$1 arm=$2 proxy=$3 prefix=$4 via=$5
  AZURE_AUTHORITY_HOST=$arm AZURE_TENANT_ID=$ACR_TENANT AZURE_CLIENT_ID=$ACR_CLIENT_ID \
    AZURE_CLIENT_SECRET=$ACR_CLIENT_SECRET AZURE_SUBSCRIPTION_ID=$ACR_SUBSCRIPTION \
    "$OS_IMPORT" --via "$via" --arm-endpoint "$arm" --to "$proxy/$prefix" <"$ACR_WORK/records" >"$out" 2>"$out.err" ||
    reg_die "os-import --via $via failed (exit $?): $(tail -n 5 "$out.err"); its error records:"$'\n'"$(jq -c 'select(.error) | .error' "$out" | head -n 3)"
}

# acr_peer LOG ARM PROXY PREFIX: the script a team writes today, per image:
# `az acr import --source DEV/REPO@DIGEST --image PREFIX/svcN:TAG` (what az
# sends: importImage by the source registry's resource id, mode NoForce,
# then its Location polled to the end; one Entra token for the run), then
# `cosign copy --only=sig,att,sbom` for what the import leaves behind.
acr_peer() {
  local log=$1 arm=$2 proxy=$3 prefix=$4 token repo digest svc body code location wait
  local headers=$ACR_WORK/peer.headers answer=$ACR_WORK/peer.answer
  : >"$log"
  token=$(curl -sS -f -X POST "$arm/$ACR_TENANT/oauth2/v2.0/token" \
    --data-urlencode grant_type=client_credentials --data-urlencode "client_id=$ACR_CLIENT_ID" \
    --data-urlencode "client_secret=$ACR_CLIENT_SECRET" --data-urlencode "scope=$ACR_RESOURCE/.default" |
    jq -r '.access_token // empty') || token=""
  [ -n "$token" ] || reg_die "the peer got no token from $arm"
  while read -r repo digest; do
    svc=${repo##*/}
    body=$(jq -cn --arg id "$ACR_DEV_ID" --arg image "$repo@$digest" --arg tag "$prefix/$svc:$ACR_TAG" \
      '{source: {resourceId: $id, sourceImage: $image}, targetTags: [$tag], mode: "NoForce"}')
    code=$(curl -sS -X POST -D "$headers" -o "$answer" -w '%{http_code}' -H "Authorization: Bearer $token" \
      -H 'Content-Type: application/json' --data "$body" \
      "$arm$ACR_PROD_ID/importImage?api-version=$ACR_API_VERSION") || reg_die "the peer's importImage of $repo failed"
    while [ "$code" = 202 ]; do
      location=$(awk 'tolower($1) == "location:" { sub(/\r$/, "", $2); print $2 }' "$headers")
      wait=$(awk 'tolower($1) == "retry-after:" { sub(/\r$/, "", $2); print $2 }' "$headers")
      [ -n "$location" ] || reg_die "the peer's importImage of $repo: 202 without a Location"
      sleep "${wait:-$ACR_RETRY_AFTER}"
      code=$(curl -sS -D "$headers" -o "$answer" -w '%{http_code}' -H "Authorization: Bearer $token" "$location") ||
        reg_die "the peer's poll of $repo's import failed"
    done
    [ "$code" = 200 ] || reg_die "the peer's import of $repo answered $code: $(head -c 400 "$answer")"
    acr_cosign copy --only=sig,att,sbom --allow-http-registry --force \
      "$ACR_DEV_PROXY/$repo@$digest" "$proxy/$prefix/$svc:$ACR_TAG" >>"$log" 2>&1 ||
      reg_die "cosign copy --only=sig,att,sbom of $repo failed: $(tail -n 5 "$log")"
  done <"$ACR_WORK/set"
}

# acr_run KEY: the timed part, nothing but the tool.
acr_run() {
  local key r prod proxy prefix arm out=$ACR_WORK/out
  read -r key r prod proxy prefix arm <"$ACR_WORK/run"
  [ "$key" = "$1" ] || reg_die "acr_run $1: the --prepare set up $key"
  case $key in
    acr-import | again) acr_os_import "$out" "$arm" "$proxy" "$prefix" acr-import ;;
    copy) acr_os_import "$out" "$arm" "$proxy" "$prefix" copy ;;
    peer) acr_peer "$out.log" "$arm" "$proxy" "$prefix" ;;
  esac
}

# --- checks (outside the timers) --------------------------------------------------

# acr_check_images HOST PREFIX WHAT: every image at HOST/PREFIX/svcN:TAG
# with the source's exact manifest bytes.
acr_check_images() {
  local host=$1 prefix=$2 what=$3 repo digest got
  while read -r repo digest; do
    got=$(curl -sS -f -H "Accept: $REG_ACCEPT" "http://$host/v2/$prefix/${repo##*/}/manifests/$ACR_TAG" 2>/dev/null | sha256sum) ||
      got=none
    got=sha256:${got%% *}
    [ "$got" = "$digest" ] || reg_die "$what: $host/$prefix/${repo##*/}:$ACR_TAG is not the source's $digest"
  done <"$ACR_WORK/set"
}

# acr_carried HOST PREFIX: "SIGS ATTS REFS": how many images have their
# .sig and .att tags (the source's exact manifests) and their OCI 1.1
# referrer (listed in the sha256-<hex> tag-fallback index, and present) at
# HOST/PREFIX/svcN.
acr_carried() {
  local host=$1 prefix=$2 repo digest referrer sigs=0 atts=0 refs=0 index=$ACR_WORK/carried.index
  while read -r repo digest; do
    local hex=${digest#sha256:} svc=${repo##*/} suffix want got
    for suffix in sig att; do
      want=$(curl -sS -H "Accept: $REG_ACCEPT" "http://$ACR_DEV/v2/$repo/manifests/sha256-$hex.$suffix" | sha256sum)
      got=$(curl -sS -f -H "Accept: $REG_ACCEPT" "http://$host/v2/$prefix/$svc/manifests/sha256-$hex.$suffix" 2>/dev/null |
        sha256sum) || got=none
      if [ "$got" = "$want" ]; then
        if [ "$suffix" = sig ]; then sigs=$((sigs + 1)); else atts=$((atts + 1)); fi
      fi
    done
    referrer=$(awk -v r="$repo" '$1 == r { print $2 }' "$ACR_WORK/referrers")
    if curl -sS -f -H "Accept: $REG_OCI_INDEX" -o "$index" "http://$host/v2/$prefix/$svc/manifests/sha256-$hex" 2>/dev/null &&
      jq -e --arg r "$referrer" 'any(.manifests[]?; .digest == $r)' "$index" >/dev/null 2>&1 &&
      [ "$(curl -s -o /dev/null -w '%{http_code}' -I -H "Accept: $REG_ACCEPT" "http://$host/v2/$prefix/$svc/manifests/$referrer")" = 200 ]; then
      refs=$((refs + 1))
    fi
  done <"$ACR_WORK/set"
  printf '%s %s %s\n' "$sigs" "$atts" "$refs"
}

# acr_verify HOST PREFIX WHAT: cosign verifies every signature, attestation
# and referrer at HOST/PREFIX/svcN@DIGEST (one call of each for all images).
acr_verify() {
  local host=$1 prefix=$2 what=$3 images=() log=$ACR_WORK/verify.log
  local common=(--key "$ACR_KEY.pub" --insecure-ignore-tlog=true --allow-http-registry)
  mapfile -t images < <(awk -v to="$host/$prefix" '{ n = split($1, p, "/"); print to "/" p[n] "@" $2 }' "$ACR_WORK/set")
  acr_cosign verify "${common[@]}" "${images[@]}" >"$log" 2>&1 ||
    reg_die "$what: cosign verify (the .sig signatures) at prod failed: $(tail -n 3 "$log")"
  acr_cosign verify-attestation "${common[@]}" --type slsaprovenance "${images[@]}" >"$log" 2>&1 ||
    reg_die "$what: cosign verify-attestation --type slsaprovenance at prod failed: $(tail -n 3 "$log")"
  acr_cosign verify "${common[@]}" --experimental-oci11 -a via=referrer "${images[@]}" >"$log" 2>&1 ||
    reg_die "$what: cosign verify --experimental-oci11 -a via=referrer at prod failed: $(tail -n 3 "$log")"
}

# acr_check_records FILE WHAT: os-import's records: one per image, no
# error, the source digest, a last event import via acr-import|copy as
# asked. Prints "BYTES-THROUGH-AGENT OPERATIONS" (the events' sums; an
# operation is a non-null operationId).
acr_check_records() {
  local file=$1 what=$2 via=$3 problem
  problem=$(jq -rn --rawfile want "$ACR_WORK/set" --arg via "$via" '
    [inputs] as $r
    | ($want | split("\n") | map(select(. != "") | split(" ")[1]) | sort) as $w
    | if ($r | length) != ($w | length) then "\($r | length) records instead of \($w | length)"
      else (first($r[] | select(.error) | "error \(.error.code): \(.error.message)") //
            first($r[] | select((.history[-1].step // "") != "import") | "a record whose last event is \(.history[-1].step // "none"), not import") //
            first($r[] | select(.history[-1].via != $via) | "an import via \(.history[-1].via), not \($via)") //
            (if ([$r[].digest] | sort) != $w then "digests \([$r[].digest] | sort | .[0:2]) are not the source ones" else empty end))
      end' "$file") || problem="not JSON records: $(head -c 300 "$file")"
  [ -z "$problem" ] || reg_die "$what: $problem"
  jq -rn '[inputs | .history[-1]] | [(map(.bytesThroughAgent) | add), (map(select(.operationId != null)) | length)] | @tsv' "$file"
}

# acr_check KEY R PROD PREFIX: that run, checked (its counters were read
# before); what the report shows of it appended to $ACR_WORK/sample.KEY:
# "R DEV-REQS PROD-REQS ARM-REQS BYTES IMPORTS SIGS ATTS REFS" (IMPORTS: the
# importImage POSTs ARM accepted).
acr_check() {
  local key=$1 r=$2 prod=$3 prefix=$4 what="$1 (run $2)" c=$ACR_WORK/counters.$1.$2 log=$ACR_WORK/log.$1.$2
  local -A count=()
  local k v
  while IFS='=' read -r k v; do count[$k]=$v; done <"$c"
  local imports bytes
  imports=$(grep -c '^arm POST .*/importImage?.* -> 202$' "$log" || true)
  bytes=$((count[dev_bytes_up] + count[dev_bytes_down] + count[prod_bytes_up] + count[prod_bytes_down]))
  acr_check_images "$prod" "$prefix" "$what"
  local carried
  carried=$(acr_carried "$prod" "$prefix")
  local event=""
  case $key in
    acr-import | again | copy)
      local via=acr-import
      [ "$key" != copy ] || via=copy
      event=$(acr_check_records "$ACR_WORK/out" "$what" "$via")
      [ ! -s "$ACR_WORK/out.err" ] || printf '%s\n' "$what: $(head -n 2 "$ACR_WORK/out.err" | tr '\n' ' ')" >>"$ACR_WORK/stderr.lines"
      [ "$carried" = "$ACR_N $ACR_N $ACR_N" ] ||
        reg_die "$what: os-import left signatures/attestations/referrers behind: ($carried) of $ACR_N each" ;;
  esac
  case $key in
    acr-import | peer)
      [ "$imports" = "$ACR_N" ] || reg_die "$what: ARM accepted $imports importImage calls, not $ACR_N" ;;
    copy | again)
      [ "$imports" = 0 ] || reg_die "$what: ARM was asked $imports imports, none expected" ;;
  esac
  [ "$key" != acr-import ] || acr_verify "$prod" "$prefix" "$what"
  if [ "$key" = again ]; then
    local event_bytes operations
    read -r event_bytes operations <<<"$event"
    if [ "$operations" != 0 ] || [ "$event_bytes" != 0 ]; then
      reg_die "$what: the re-run sent $event_bytes bytes and started $operations operations"
    fi
  fi
  printf '%s %s %s %s %s %s %s\n' "$r" "${count[dev_requests]}" "${count[prod_requests]}" "${count[arm_requests]}" "$bytes" \
    "$imports" "$carried" >>"$ACR_WORK/sample.$key"
  [ -z "$event" ] || printf '%s %s\n' "$r" "$event" >>"$ACR_WORK/event.$key"
}

# acr_check_last: the run before (if any): its counters and logs read at
# once (before any check), then checked.
acr_check_last() {
  [ -e "$ACR_WORK/run" ] || return 0
  local key r prod proxy prefix arm
  read -r key r prod proxy prefix arm <"$ACR_WORK/run"
  acr_counters "$ACR_WORK/counters.$key.$r"
  "$BIN/bench-env" log --control "$HARNESS_CONTROL" >"$ACR_WORK/log.$key.$r" || reg_die "bench-env log failed"
  rm -f -- "$ACR_WORK/run"
  acr_check "$key" "$r" "$prod" "$prefix"
}

# acr_next KEY: hyperfine's --prepare, before every run of KEY: the run
# before checked; a fresh prod (and its proxy and stand-in); for again,
# filled by os-import --via acr-import; the counters zeroed.
acr_next() {
  local key=$1 r=0 prefix
  acr_check_last
  [ ! -e "$ACR_WORK/$key.round" ] || read -r r <"$ACR_WORK/$key.round"
  r=$((r + 1))
  printf '%s\n' "$r" >"$ACR_WORK/$key.round"
  acr_fresh_prod
  prefix=r$r/$key
  if [ "$key" = again ]; then
    acr_os_import "$ACR_WORK/fill" "$ACR_ARM" "$ACR_PROD_PROXY" "$prefix" acr-import
    acr_check_records "$ACR_WORK/fill" "os-import filling prod for again (run $r)" acr-import >/dev/null
    acr_check_images "$ACR_PROD" "$prefix" "os-import filling prod for again (run $r)"
  fi
  acr_reset
  printf '%s %s %s %s %s %s\n' "$key" "$r" "$ACR_PROD" "$ACR_PROD_PROXY" "$prefix" "$ACR_ARM" >"$ACR_WORK/run"
}

# --- report -------------------------------------------------------------------------

# acr_median KEY COLUMN: the median over KEY's runs of sample column COLUMN
# (2 dev requests, 3 prod requests, 4 ARM requests, 5 bytes, ...).
acr_median() {
  awk -v c="$2" '{ print $c }' "$ACR_WORK/sample.$1" | hf_median
}
# acr_last KEY COLUMN: the last run's.
acr_last() {
  awk -v c="$2" '{ v = $c } END { print v }' "$ACR_WORK/sample.$1"
}
acr_mib() { printf '%.3f' "$(jq -n --argjson b "$1" '$b / 1048576')"; }

# acr_classify LOG: the re-run's requests (bench-env log) sorted into
# "IMAGE ATTACHMENTS RUN ARM": IMAGE a request for the image (its tag at
# the target, the source's tag list) in one of the set's repositories;
# ATTACHMENTS the rest in those repositories (the sha256-<hex> tags, the
# attachments' manifests); RUN a request outside them (/v2/) or of the
# Referrers API (os-import probes it once per registry and run); ARM every
# request to the stand-in. Also writes LOG.classified (one "CLASS REQUEST" a line).
acr_classify() {
  awk -v tag="$ACR_TAG" '
    $1 == "arm" { print "arm", substr($0, 5); next }
    {
      target = $3
      sub(/\?.*/, "", target)
      if (target !~ /\/svc[0-9]+\// || target ~ /\/referrers\//) { print "run", $0; next }
      if (($1 == "prod" && $2 == "HEAD" && target ~ "/manifests/" tag "$") ||
          ($1 == "dev" && $2 == "GET" && target ~ /\/tags\/list$/)) { print "image", $0; next }
      print "attachments", $0
    }' "$1" >"$1.classified"
  awk '{ n[$1]++ } END { printf "%d %d %d %d\n", n["image"], n["attachments"], n["run"], n["arm"] }' "$1.classified"
}

bench_acr() {
  local runs=${RUNS:-3}
  OS_IMPORT=$BIN/os-import
  [ -x "$OS_IMPORT" ] || reg_die "$OS_IMPORT was not built"
  command -v cosign >/dev/null || reg_die "cosign is not installed (run scripts/setup)"
  local load
  read -r load _ </proc/loadavg || load=unknown
  local started=${EPOCHREALTIME//[!0-9]/}

  local work="" storage
  reg_mktemp work "${REG_STORAGE_TMPDIR:-}"
  ACR_WORK=$work
  say "acr: starting dev and prod behind counting proxies and the Resource Manager stand-in; pushing $ACR_N images x 2 layers x 64 MiB to dev"
  HARNESS_CONTROL=$work/control
  harness_start --acr dev=devacr --acr prod=prodacr --arm-retry-after "$ACR_RETRY_AFTER" dev prod
  ACR_DEV=${HARNESS[dev_host]} ACR_DEV_PROXY=${HARNESS[dev_proxy]} ACR_DEV_ID=${HARNESS[dev_id]}
  ACR_PROD_ID=${HARNESS[prod_id]}
  ACR_TENANT=${HARNESS[arm_AZURE_TENANT_ID]} ACR_CLIENT_ID=${HARNESS[arm_AZURE_CLIENT_ID]}
  ACR_CLIENT_SECRET=${HARNESS[arm_AZURE_CLIENT_SECRET]} ACR_SUBSCRIPTION=${HARNESS[arm_AZURE_SUBSCRIPTION_ID]}
  storage="${HARNESS[dev_dir]%/*} ($(stat -f -c %T "${HARNESS[dev_dir]}"))"
  ACR_HOME=$work/home # cosign's HOME: offline, no ~/.sigstore, no ~/.docker
  mkdir -p "$ACR_HOME"
  ACR_KEY=$work/cosign
  (cd "$work" && COSIGN_PASSWORD=$ACR_PASSWORD HOME=$ACR_HOME cosign generate-key-pair --output-key-prefix cosign) \
    >"$work/keygen.log" 2>&1 || reg_die "cosign generate-key-pair failed: $(tail -n 5 "$work/keygen.log")"
  acr_set
  say "acr: signing, attesting and adding an OCI 1.1 referrer to each image (cosign)"
  acr_sign
  say "acr: set-up took $(us_ms $((${EPOCHREALTIME//[!0-9]/} - started))) ms"

  export BIN OS_IMPORT ACR_WORK ACR_N ACR_TAG ACR_PASSWORD ACR_HOME ACR_KEY ACR_DEV ACR_DEV_PROXY ACR_DEV_ID \
    ACR_PROD_ID ACR_TENANT ACR_CLIENT_ID ACR_CLIENT_SECRET ACR_SUBSCRIPTION ACR_API_VERSION ACR_RESOURCE \
    ACR_RETRY_AFTER HARNESS_CONTROL REG_ACCEPT REG_OCI_INDEX REG_PROG
  export -f acr_run acr_next acr_check_last acr_check acr_fresh_prod harness_restart acr_counters acr_reset \
    acr_os_import acr_peer acr_cosign acr_check_images acr_carried acr_verify acr_check_records reg_die

  # Warm-up (page cache, binaries, and the whole machinery once, checked
  # as every run is): acr-import and the peer once each.
  say "acr: warm-up: acr-import and the peer once each, checked"
  local key
  for key in acr-import peer; do
    acr_next "$key"
    acr_run "$key"
  done
  acr_check_last
  rm -f -- "$work"/*.round "$work"/sample.* "$work"/event.* "$work"/counters.* "$work"/log.* "$work/stderr.lines"

  say "acr: $runs run$([ "$runs" -eq 1 ] || echo s) of each of ${#ACR_KEYS[@]} contenders (${ACR_KEYS[*]}), each on a fresh prod (made in hyperfine's --prepare)"
  local json=$work/acr.json contenders=()
  for key in "${ACR_KEYS[@]}"; do
    contenders+=(--prepare "acr_next $key" -n "$key" "acr_run $key")
  done
  hf_run "$json" --runs "$runs" "${contenders[@]}"
  # The last run, which no --prepare came after.
  acr_check_last
  harness_stop

  # --- report ---
  local cosign_version rerun_log image attachments per_run arm_rerun
  cosign_version=$(dpkg-query -W -f '${Version}' cosign 2>/dev/null) || cosign_version=unknown
  rerun_log=$work/log.again.$(awk '{ r = $1 } END { print r }' "$work/sample.again")
  read -r image attachments per_run arm_rerun < <(acr_classify "$rerun_log")
  local n=$ACR_N total_mib
  total_mib=$(acr_mib $((n * 2 * ACR_LAYER_SIZE)))
  echo
  echo "acr: $n images x 2 layers x 64 MiB ($total_mib MiB), each with a cosign signature (.sig), an attestation (.att, SLSA provenance) and an OCI 1.1 referrer (tag fallback), promoted dev -> prod; a fresh prod for every contender of every round; $runs round$([ "$runs" -eq 1 ] || echo s)"
  echo "  $("$OS_IMPORT" --version) (one process, the records from os-digest on stdin, --jobs 8, the default); cosign $cosign_version; curl $(curl --version | awk 'NR == 1 { print $2 }'); $(docker-registry --version | awk '{ print "docker-registry", $NF }'); $(hyperfine --version); nproc $(nproc); load average $load at the start"
  echo "  registry storage: $storage"
  echo "  dev and prod are ACRs of os-testkit's Resource Manager stand-in (its importImage a Location-polled operation; the copy server-side, to and from the registries directly, nothing attached); the agent reaches both registries through counting proxies (its login servers)"
  echo "  bytes: through the agent, both proxies' requests and answers (heads and bodies, up + down); requests: the agent's to dev and prod (the proxies' logs) and to ARM and Entra (the stand-in's log, which only the agent calls); medians over the rounds"
  echo "  ARM answers an accepted import and its polls with Retry-After: $ACR_RETRY_AFTER, which os-import and the peer honour"
  echo "  wall time includes the stand-in's own server-side copy (ACR's is another program on another network) and those pauses: shown, not a target"
  echo
  printf '  %-50s %9s %8s %8s %12s %8s %8s %8s\n' contender "median ms" "min ms" "max ms" "agent MiB" "dev req" "prod req" "ARM req"
  local row label median
  for row in \
    "acr-import|os-import --via acr-import, 1 process" \
    "copy|os-import --via copy, 1 process" \
    "peer|az acr import (curl) + cosign copy, per image" \
    "again|re-run: os-import --via acr-import, all there"; do
    IFS='|' read -r key label <<<"$row"
    median=$(hf_stat "$json" "$key" median)
    printf '  %-50s %9s %8s %8s %12s %8s %8s %8s\n' "$label" "$median" \
      "$(hf_stat "$json" "$key" min)" "$(hf_stat "$json" "$key" max)" "$(acr_mib "$(acr_median "$key" 5)")" \
      "$(acr_median "$key" 2)" "$(acr_median "$key" 3)" "$(acr_median "$key" 4)"
  done
  echo
  echo "  at prod (last round; of $n images): signature .sig / attestation .att / OCI 1.1 referrer"
  local sigs atts refs
  for key in acr-import copy peer again; do
    read -r sigs atts refs < <(awk '{ s = $7 " " $8 " " $9 } END { print s }' "$work/sample.$key")
    printf '    %-12s %2s / %2s / %2s\n' "$key" "$sigs" "$atts" "$refs"
  done
  local peer_refs
  peer_refs=$(acr_last peer 9)
  [ "$peer_refs" = "$n" ] ||
    echo "  the peer left behind: $((n - peer_refs)) of $n OCI 1.1 referrers (cosign copy carries .sig/.att/.sbom tags, not the referrers' tag-fallback index)"
  local ev_bytes
  ev_bytes=$(awk '{ v = $2 } END { print v }' "$work/event.acr-import")
  echo "  os-import's events, acr-import (last round): bytesThroughAgent $ev_bytes (the attachments), $(awk '{ v = $3 } END { print v }' "$work/event.acr-import") operations; copy: bytesThroughAgent $(awk '{ v = $2 } END { print v }' "$work/event.copy")"
  echo "  re-run (last round): $image image requests ($(jq -n "$image / $n") per image: HEAD the target tag, list the source's tags), $attachments for the attachments ($(jq -n "$attachments / $n") per image: their sha256-<hex> tags at both ends), $per_run per run (/v2/, the Referrers API probe), $arm_rerun of ARM and Entra (a token, the registry list); all counted: $(jq -n "($image + $attachments + $per_run + $arm_rerun) / $n") per image"
  echo "  the re-run's requests (last round; svcN: each image, sha256-X: a digest):"
  sed -E 's/svc[0-9]+/svcN/g; s/sha256([:-])[0-9a-f]{64}/sha256\1X/g; s/arm-token-[0-9a-f]+/TOKEN/g' "$rerun_log.classified" |
    sort | uniq -c | sort -k2,2 -k1,1rn | awk '{ printf "    %3d  %s\n", $1, substr($0, index($0, $2)) }'

  # --- targets ---
  local bytes_acr bytes_copy
  bytes_acr=$(acr_median acr-import 5)
  bytes_copy=$(acr_median copy 5)
  read -r sigs atts refs < <(awk '{ s = $7 " " $8 " " $9 } END { print s }' "$work/sample.acr-import")
  echo
  echo "targets:"
  hf_target "bytes through the agent under acr-import at most 1% of copy's ($bytes_acr bytes vs $bytes_copy: $(printf '%.4f' "$(jq -n "$bytes_acr * 100 / $bytes_copy")")%)" \
    "$bytes_acr" "$bytes_copy" 'a <= 0.01 * b'
  hf_target "every signature, attestation and referrer present at prod after os-import --via acr-import, and verifying (cosign verify, verify-attestation --type slsaprovenance, verify --experimental-oci11 -a via=referrer; every round): $sigs/$n, $atts/$n, $refs/$n" \
    "$((sigs + atts + refs))" "$((3 * n))" 'a == b'
  hf_target "re-run: at most 2 requests per image for the image ($(jq -n "$image / $n") per image: HEAD the target tag, list the source's tags; not counted: $attachments for the attachments' checks, $(jq -n "$attachments / $n") per image, $per_run per run, $arm_rerun of ARM; everything: $(jq -n "($image + $attachments + $per_run + $arm_rerun) / $n") per image)" \
    "$image" "$((2 * n))" 'a <= b'
  if [ -s "$work/stderr.lines" ]; then
    echo "os-import wrote on stderr (not a terminal; it should be quiet):"
    sed 's/^/  /' "$work/stderr.lines"
  fi
  echo "checked: every contender's prod holds every image's exact manifest bytes; os-import's records carry an import event via the way asked and no error, and its prod every .sig, .att and referrer (the source's exact manifests); acr-import and the peer had ARM accept $n imports, copy and the re-run none; the re-run sent 0 bytes and started no operation"
  say "acr: took $(us_ms $((${EPOCHREALTIME//[!0-9]/} - started))) ms"
}
