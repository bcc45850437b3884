# shellcheck shell=bash
# scripts/bench pipeline: the headline. 20 services (3 layers x 8 MiB each)
# promoted dev -> staging -> prod, signed in dev, verified at each stage, and
# their Deployments pinned by digest, as one os-* pipe:
#
#   os-digest | os-sign | os-import --to STAGING | os-verify
#     | os-import --to PROD | os-verify | os-deploy render
#
# against the same job scripted per service with the peers a team uses
# today: cosign sign, cosign copy dev -> staging, cosign verify there,
# cosign copy staging -> prod, cosign verify there, kubectl set image
# --local. With BENCH_BASELINE_BIN=DIR, the pipe of DIR's os-* binaries (an
# older build) is a third contender, in the same hyperfine run.
#
# Registries from os-testkit's bench-env (scripts/lib/harness.sh): dev is
# filled once (bench-env push-set: the images at seed/svcN). Before every
# run of every contender, in hyperfine's --prepare, the images are copied
# inside dev to repositories of that run's own, rR/KEY/svcN (bench-env
# mount-set: the blobs mounted, the same manifests; both contenders sign in
# dev, so neither may find the other's signatures), and staging and prod
# are replaced by fresh, empty registries (bench-env restart). The same
# --prepare checks the run before it. Timed by hyperfine.
#
# Sourced by scripts/bench after its helpers (say, RUNS, the release build's
# BIN and OS_*, sign_check_cosign_verify); uses harness_*, hf_* and us_ms
# from scripts/lib/harness.sh and reg_* from scripts/lib/registry.sh.
# Defines bench_pipeline.
#
# Variables set here are read across functions:
# shellcheck disable=SC2034

PIPELINE_SERVICES=20
PIPELINE_LAYERS=3
PIPELINE_LAYER_SIZE=$((8 * 1024 * 1024))
PIPELINE_TAG=1.0.0
PIPELINE_PASSWORD=bench-pipeline-password
# The pipe's stages, in order (names for the report and the stage stamps),
# and the peer's steps, per service. Words, not arrays: hyperfine's bash
# gets them exported.
PIPELINE_STAGES="digest sign import-staging verify-staging import-prod verify-prod deploy"
PIPELINE_PEER_STEPS="sign copy-staging verify-staging copy-prod verify-prod kubectl"

pipeline_cosign() { HOME=$PIPELINE_HOME COSIGN_PASSWORD=$PIPELINE_PASSWORD cosign "$@" </dev/null; }

# --- the fixtures -----------------------------------------------------------------

# pipeline_fixture NAME PREFIX: everything a contender needs, made before its
# timer, in $PIPELINE_WORK/NAME/: the images at dev/PREFIX/svcN:TAG (bench-env
# mount-set: seed/svcN's blobs mounted, its manifest pushed), manifests/svcN.yaml
# (a Deployment naming the image by its dev tag), refs (the dev references,
# for os-digest) and peer.list ("svcN dev/PREFIX/svcN DIGEST", for the peer
# script).
pipeline_fixture() {
  local name=$1 prefix=$2 dir=$PIPELINE_WORK/$1 repo digest svc
  rm -rf -- "$dir"
  mkdir -p "$dir/manifests"
  "$BIN/bench-env" mount-set --host "$PIPELINE_DEV" --from seed --to "$prefix" --count "$PIPELINE_SERVICES" \
    --tag "$PIPELINE_TAG" >"$dir/set" 2>"$dir/mount.err" ||
    reg_die "bench-env mount-set of the seed images into dev/$prefix failed: $(tail -n 3 "$dir/mount.err")"
  cmp -s <(cut -d' ' -f2 "$dir/set") <(cut -d' ' -f2 "$PIPELINE_WORK/seed.set") ||
    reg_die "the images mounted into dev/$prefix have other digests than the seed's:"$'\n'"$(head -n 3 "$dir/set")"
  while read -r repo digest; do
    svc=${repo##*/}
    printf '%s/%s:%s\n' "$PIPELINE_DEV" "$repo" "$PIPELINE_TAG" >&3
    printf '%s %s/%s %s\n' "$svc" "$PIPELINE_DEV" "$repo" "$digest" >&4
    cat >"$dir/manifests/$svc.yaml" <<YAML
# $svc: generated for scripts/bench pipeline.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: $svc
  labels:
    app.kubernetes.io/name: $svc
spec:
  replicas: 2
  selector:
    matchLabels:
      app.kubernetes.io/name: $svc
  template:
    metadata:
      labels:
        app.kubernetes.io/name: $svc
    spec:
      containers:
        - name: app
          image: $PIPELINE_DEV/$repo:$PIPELINE_TAG # the build's tag
          ports:
            - containerPort: 8080
YAML
  done <"$dir/set" 3>"$dir/refs" 4>"$dir/peer.list"
}

# pipeline_targets: staging and prod replaced by fresh, empty registries
# (from hyperfine's --prepare too); sets PIPELINE_STAGING, PIPELINE_PROD and
# their _PID.
pipeline_targets() {
  local -A HARNESS=()
  harness_restart staging
  harness_restart prod
  PIPELINE_STAGING=${HARNESS[staging_host]} PIPELINE_STAGING_PID=${HARNESS[staging_pid]}
  PIPELINE_PROD=${HARNESS[prod_host]} PIPELINE_PROD_PID=${HARNESS[prod_pid]}
}

# --- the contenders -------------------------------------------------------------
# Each dies with the tool's own words if it fails: a benchmark of a job that
# was not done would mean nothing.

# pipeline_tool STAGE: the pipe's stage STAGE, records from stdin to stdout,
# its stderr into $dir/STAGE.err. Reads its caller's locals: dir (the run's
# files), tools (the directory of the os-* binaries), staging, prod.
pipeline_tool() {
  case $1 in
    digest) "$tools/os-digest" --service-from-repo ;;
    sign) COSIGN_PASSWORD=$PIPELINE_PASSWORD "$tools/os-sign" --key "$PIPELINE_KEY.key" ;;
    import-staging) "$tools/os-import" --to "$staging" ;;
    import-prod) "$tools/os-import" --to "$prod" ;;
    verify-staging | verify-prod) "$tools/os-verify" --key "$PIPELINE_KEY.pub" ;;
    deploy) "$tools/os-deploy" render "$dir/manifests" --records-out "$dir/records.jsonl" ;;
    *) reg_die "pipeline_tool: no stage $1" ;;
  esac 2>"$dir/$1.err"
}

# pipeline_stage STAGE: one stage of the pipe, in the pipe's own subshell:
# runs it, closes its ends of the pipe, then appends "STAGE µs" (when it
# finished) to $dir/stamps. Reads pipeline_os's locals.
pipeline_stage() {
  local status=0
  pipeline_tool "$1" || status=$?
  exec <&- >&-
  printf '%s %s\n' "$1" "${EPOCHREALTIME//[!0-9]/}" >>"$dir/stamps"
  return "$status"
}

# pipeline_os DIR STAGING PROD TOOLS: the pipe, one process per tool (the
# os-* binaries in TOOLS), on the fixture in DIR.
pipeline_os() {
  local dir=$1 staging=$2 prod=$3 tools=$4 statuses s
  local -
  set +e
  printf 'start %s\n' "${EPOCHREALTIME//[!0-9]/}" >"$dir/stamps"
  pipeline_stage digest <"$dir/refs" | pipeline_stage sign | pipeline_stage import-staging |
    pipeline_stage verify-staging | pipeline_stage import-prod | pipeline_stage verify-prod |
    pipeline_stage deploy >"$dir/rendered.yaml"
  statuses="${PIPESTATUS[*]}"
  [ "$statuses" = "0 0 0 0 0 0 0" ] ||
    reg_die "the os-* pipe ($tools) exited $statuses ($PIPELINE_STAGES); stderr:
$(for s in $PIPELINE_STAGES; do [ ! -s "$dir/$s.err" ] || printf '%s: %s\n' "$s" "$(tail -n 3 "$dir/$s.err")"; done)
error records: $(jq -c 'select(.error) | .error' "$dir/records.jsonl" 2>/dev/null | head -n 3)"
}

# pipeline_peer_hop FROM TO STAGE: one stage of the peer script for the
# image pipeline_peer is at: cosign copy FROM@digest to TO:TAG, then cosign
# verify TO@digest. Reads pipeline_peer's locals (digest, dir, log) and adds
# each step's time to its sum[copy-STAGE] and sum[verify-STAGE], moving t0.
pipeline_peer_hop() {
  local from=$1 to=$2 stage=$3
  pipeline_cosign copy --allow-http-registry --force "$from@$digest" "$to:$PIPELINE_TAG" >>"$log" 2>&1 ||
    reg_die "cosign copy $from@$digest $to:$PIPELINE_TAG failed: $(tail -n 5 "$log")"
  t1=${EPOCHREALTIME//[!0-9]/}
  ((sum[copy-$stage] += t1 - t0)); t0=$t1
  pipeline_cosign verify --key "$PIPELINE_KEY.pub" --insecure-ignore-tlog=true --allow-http-registry \
    "$to@$digest" >>"$dir/verified-$stage" 2>>"$log" ||
    reg_die "cosign verify $to@$digest failed: $(tail -n 5 "$log")"
  t1=${EPOCHREALTIME//[!0-9]/}
  ((sum[verify-$stage] += t1 - t0)); t0=$t1
}

# pipeline_peer DIR STAGING PROD: the peer script, service after service.
# Writes each step's time (µs, summed over the services) to DIR/peer.sums
# ("STEP µs" lines).
pipeline_peer() {
  local dir=$1 staging=$2 prod=$3 svc src digest path log=$1/peer.log t0 t1 step
  local -A sum=()
  for step in $PIPELINE_PEER_STEPS; do sum[$step]=0; done
  : >"$log"
  : >"$dir/verified-staging"
  : >"$dir/verified-prod"
  mkdir -p "$dir/out"
  while read -r svc src digest; do
    path=${src#*/}
    t0=${EPOCHREALTIME//[!0-9]/}
    pipeline_cosign sign --yes --key "$PIPELINE_KEY.key" --tlog-upload=false --allow-http-registry \
      "$src@$digest" >>"$log" 2>&1 || reg_die "cosign sign $src@$digest failed: $(tail -n 5 "$log")"
    t1=${EPOCHREALTIME//[!0-9]/}
    ((sum[sign] += t1 - t0)); t0=$t1
    pipeline_peer_hop "$src" "$staging/$path" staging
    pipeline_peer_hop "$staging/$path" "$prod/$path" prod
    kubectl set image --local -o yaml -f "$dir/manifests/$svc.yaml" "app=$prod/$path@$digest" </dev/null \
      >"$dir/out/$svc.yaml" 2>>"$log" || reg_die "kubectl set image --local on $svc.yaml failed: $(tail -n 5 "$log")"
    t1=${EPOCHREALTIME//[!0-9]/}
    ((sum[kubectl] += t1 - t0))
  done <"$dir/peer.list"
  for step in $PIPELINE_PEER_STEPS; do
    printf '%s %s\n' "$step" "${sum[$step]}"
  done >"$dir/peer.sums"
}

# --- checks (outside the timers) --------------------------------------------------

# pipeline_check_prod DIR PROD WHAT: PROD/PATH:TAG holds the exact manifest
# bytes of every image of peer.list (sha256 of what prod serves = the digest).
pipeline_check_prod() {
  local dir=$1 prod=$2 what=$3 fetched=$1/fetched svc src digest path args=() got
  rm -rf -- "$fetched"
  mkdir -p "$fetched"
  while read -r svc src _; do
    path=${src#*/}
    args+=(-o "$fetched/$svc" "http://$prod/v2/$path/manifests/$PIPELINE_TAG")
  done <"$dir/peer.list"
  curl -sS -f -H "Accept: $REG_ACCEPT" "${args[@]}" 2>/dev/null || true
  while read -r svc src digest; do
    got=none
    [ -s "$fetched/$svc" ] && got=$(sha256sum <"$fetched/$svc") && got=sha256:${got%% *}
    [ "$got" = "$digest" ] ||
      reg_die "$what: prod's ${src#*/}:$PIPELINE_TAG is $got, dev's is $digest"
  done <"$dir/peer.list"
}

# pipeline_prod_refs DIR: PROD/PATH@DIGEST per image of DIR/peer.list: where
# the job puts it.
pipeline_prod_refs() {
  awk -v prod="$PIPELINE_PROD" '{ p = $2; sub(/^[^\/]*\//, "", p); print prod "/" p "@" $3 }' "$1/peer.list"
}

# pipeline_check_images DIR FILE... WHAT: the image lines of FILE... are
# exactly PROD/PATH@DIGEST, one per service (nothing else, none missing).
pipeline_check_images() {
  local dir=$1 what=${*: -1} got want
  local files=("${@:2:$#-2}")
  got=$(cat "${files[@]}" | sed -n 's/^ *\(- \)\{0,1\}image: *\([^ #]*\).*/\2/p' | sort)
  want=$(pipeline_prod_refs "$dir" | sort)
  [ "$got" = "$want" ] ||
    reg_die "$what pinned the wrong images; first differences (< got, > expected):"$'\n'"$(diff <(printf '%s\n' "$got") <(printf '%s\n' "$want") | head -n 8)"
}

# pipeline_check_records DIR WHAT: os-deploy's records: one per service, no
# error, at prod, the dev digest, every step of the pipe in its history,
# each verify event verified where the image then was.
pipeline_check_records() {
  local dir=$1 what=$2 problem
  problem=$(jq -rn --rawfile want "$dir/peer.list" --arg prod "$PIPELINE_PROD" --arg staging "$PIPELINE_STAGING" '
    [inputs] as $r
    | ($want | split("\n") | map(select(. != "") | split(" "))) as $w
    | if ($r | length) != ($w | length) then "\($r | length) records instead of \($w | length)"
      else first(range(0; $w | length) as $i | $r[$i] as $x | ($w[$i][1] | sub("^[^/]*/"; "")) as $path
        | if $x.error then "record \($i + 1): error \($x.error.code): \($x.error.message)"
          elif $x.digest != $w[$i][2] then "record \($i + 1): digest \($x.digest), expected \($w[$i][2])"
          elif $x.image != "\($prod)/\($path)" then "record \($i + 1): image \($x.image), expected \($prod)/\($path)"
          elif [$x.history[].step] != ["digest", "sign", "import", "verify", "import", "verify", "deploy"] then
            "record \($i + 1): history steps \([$x.history[].step])"
          elif $x.history[1].added != true then "record \($i + 1): its sign event says added: \($x.history[1].added)"
          elif ($x.history[2].attached // [] | map(endswith(".sig")) | any | not) then
            "record \($i + 1): the signature did not travel to staging: \($x.history[2] | tojson)"
          elif $x.history[3].verified != true or $x.history[3].image != "\($staging)/\($path)" then
            "record \($i + 1): verify at staging: \($x.history[3] | tojson)"
          elif $x.history[5].verified != true or $x.history[5].image != "\($prod)/\($path)" then
            "record \($i + 1): verify at prod: \($x.history[5] | tojson)"
          elif $x.history[6].image != "\($prod)/\($path)@\($x.digest)" then
            "record \($i + 1): deploy event pins \($x.history[6].image)"
          else empty end) // empty
      end' "$dir/records.jsonl") || problem="not JSON records: $(head -c 300 "$dir/records.jsonl")"
  [ -z "$problem" ] || reg_die "$what: the records: $problem"
}

# pipeline_check_os DIR WHAT: everything the pipe promised. Writes how many
# of os-sign's signatures cosign verify accepted in prod to DIR/cosign.ok.
pipeline_check_os() {
  local dir=$1 what=$2 refs=()
  pipeline_check_records "$dir" "$what"
  pipeline_check_prod "$dir" "$PIPELINE_PROD" "$what"
  pipeline_check_images "$dir" "$dir/rendered.yaml" "$what: os-deploy render"
  # The peer's verifier on os-sign's signatures, in prod: one call, 20 refs.
  mapfile -t refs < <(pipeline_prod_refs "$dir")
  pipeline_cosign verify --key "$PIPELINE_KEY.pub" --insecure-ignore-tlog=true --allow-http-registry "${refs[@]}" \
    >"$dir/cosign-verified" 2>"$dir/cosign-verified.err" ||
    reg_die "$what: cosign verify of os-sign's signatures in prod failed (exit $?): $(tail -n 5 "$dir/cosign-verified.err")"
  awk '{ print $3 }' "$dir/peer.list" >"$dir/digests"
  sign_check_cosign_verify "$dir/cosign-verified" "$what: cosign verify of os-sign's signatures in prod" "$dir/digests"
  printf '%s\n' "${#refs[@]}" >"$dir/cosign.ok"
}

# pipeline_check_peer DIR WHAT: the peer's job done.
pipeline_check_peer() {
  local dir=$1 what=$2
  pipeline_check_prod "$dir" "$PIPELINE_PROD" "$what"
  pipeline_check_images "$dir" "$dir"/out/*.yaml "$what: kubectl set image --local"
  awk '{ print $3 }' "$dir/peer.list" >"$dir/digests"
  sign_check_cosign_verify "$dir/verified-staging" "$what: cosign verify at staging" "$dir/digests"
  sign_check_cosign_verify "$dir/verified-prod" "$what: cosign verify at prod" "$dir/digests"
}

# --- the runs, as hyperfine runs them ---------------------------------------------
# KEY is the command's name: os (this build's pipe), baseline (the pipe of
# BENCH_BASELINE_BIN's binaries), peer. Run R of KEY works in
# $PIPELINE_WORK/rR-KEY, on dev/rR/KEY/svcN. $PIPELINE_WORK/run names the
# run set up last: "KEY R STAGING PROD".

# pipeline_run KEY: the timed part, nothing but the job.
pipeline_run() {
  local key r staging prod
  read -r key r staging prod <"$PIPELINE_WORK/run"
  [ "$key" = "$1" ] || reg_die "pipeline_run $1: the --prepare set up $key"
  local dir=$PIPELINE_WORK/r$r-$key
  case $key in
    os) pipeline_os "$dir" "$staging" "$prod" "$BIN" ;;
    baseline) pipeline_os "$dir" "$staging" "$prod" "$PIPELINE_BASELINE" ;;
    peer) pipeline_peer "$dir" "$staging" "$prod" ;;
  esac
}

# pipeline_check_last: what the run $PIPELINE_WORK/run names did, checked
# (on the registries it ran against), if there was one; then forgotten.
pipeline_check_last() {
  local key r dir
  [ -e "$PIPELINE_WORK/run" ] || return 0
  read -r key r PIPELINE_STAGING PIPELINE_PROD <"$PIPELINE_WORK/run"
  dir=$PIPELINE_WORK/r$r-$key
  case $key in
    os) pipeline_check_os "$dir" "the os-* pipe (run $r)" ;;
    baseline) pipeline_check_os "$dir" "the baseline's os-* pipe (run $r)" ;;
    peer) pipeline_check_peer "$dir" "the peer script (run $r)" ;;
  esac
  rm -f -- "$PIPELINE_WORK/run"
}

# pipeline_next KEY: hyperfine's --prepare, before every run of KEY: closes
# the registries' CPU sample of the run before (whichever contender's) and
# checks that run, on the registries it ran against; then sets this one up
# (its own repositories in dev, fresh staging and prod) and opens the CPU
# sample of the three registries.
pipeline_next() {
  local key=$1 r=0
  hf_cpu_close
  pipeline_check_last
  [ ! -e "$PIPELINE_WORK/$key.round" ] || read -r r <"$PIPELINE_WORK/$key.round"
  r=$((r + 1))
  printf '%s\n' "$r" >"$PIPELINE_WORK/$key.round"
  pipeline_fixture "r$r-$key" "r$r/$key"
  pipeline_targets
  printf '%s %s %s %s\n' "$key" "$r" "$PIPELINE_STAGING" "$PIPELINE_PROD" >"$PIPELINE_WORK/run"
  hf_cpu_open "$key" "$PIPELINE_DEV_PID" "$PIPELINE_STAGING_PID" "$PIPELINE_PROD_PID"
}

# --- the stages alone -------------------------------------------------------------
# The pipe's stages one after another, each its own process reading the
# previous stage's records from a file, on fresh staging and prod: what each
# stage costs alone. Once, before the runs, by hyperfine (one run each, in
# order); it doubles as the os-* tools' warm-up. Files in
# $PIPELINE_WORK/alone: STAGE.out (its output), STAGE.err.

pipeline_alone() { # STAGE
  local dir=$PIPELINE_WORK/alone tools=$BIN staging=$PIPELINE_STAGING prod=$PIPELINE_PROD in=refs s
  for s in $PIPELINE_STAGES; do
    [ "$s" != "$1" ] || break
    in=$s.out
  done
  pipeline_tool "$1" <"$dir/$in" >"$dir/$1.out" ||
    reg_die "$1 alone failed (exit $?): $(tail -n 3 "$dir/$1.err"); error records: $(jq -c 'select(.error) | .error' "$dir/$1.out" 2>/dev/null | head -n 2)"
}

pipeline_alone_next() { # STAGE: its --prepare
  hf_cpu_close
  hf_cpu_open "alone:$1" "$PIPELINE_DEV_PID" "$PIPELINE_STAGING_PID" "$PIPELINE_PROD_PID"
}

# pipeline_stages_alone: runs them; the report reads $PIPELINE_WORK/alone.json
# and alone.cpu, and PIPELINE_IMPORT_NOTE[staging|prod] (what the import
# events say).
pipeline_stages_alone() {
  local dir=$PIPELINE_WORK/alone s args=()
  pipeline_fixture alone alone/os
  pipeline_targets
  export PIPELINE_STAGING PIPELINE_STAGING_PID PIPELINE_PROD PIPELINE_PROD_PID
  for s in $PIPELINE_STAGES; do
    args+=(--prepare "pipeline_alone_next $s" -n "alone:$s" "pipeline_alone $s")
  done
  hf_run "$PIPELINE_WORK/alone.json" --runs 1 "${args[@]}"
  hf_cpu_close
  pipeline_check_records "$dir" "the os-* stages run alone"
  pipeline_check_prod "$dir" "$PIPELINE_PROD" "the os-* stages run alone"
  pipeline_check_images "$dir" "$dir/deploy.out" "os-deploy render (stages alone)"
  # What the import events say: the sum of their durations (records are
  # imported 8 at a time, so this is more than the stage's wall time), the
  # slowest record, the bytes sent.
  local note='[.[].history[-1]] | "\((map(.bytes) | add) / 1048576 | floor) MiB sent, \(map(.blobsCopied) | add) blobs copied, \(map(.blobsMounted) | add) mounted; per record: median \(map(.durationMs) | sort | .[length / 2 | floor]) ms, slowest \(map(.durationMs) | max) ms"'
  PIPELINE_IMPORT_NOTE[staging]=$(jq -rs "$note" "$dir/import-staging.out")
  PIPELINE_IMPORT_NOTE[prod]=$(jq -rs "$note" "$dir/import-prod.out")
}

# --- report helpers ---------------------------------------------------------------

# pipeline_finished KEY STAGE: the median over KEY's runs of when STAGE's
# process exited in the pipe, ms after the pipe started; "-" without any.
pipeline_finished() {
  local stamps name at start
  us_ms "$(for stamps in "$PIPELINE_WORK"/r*-"$1"/stamps; do
    [ -e "$stamps" ] || continue
    while read -r name at; do
      case $name in
        start) start=$at ;;
        "$2") printf '%s\n' "$((at - start))" ;;
      esac
    done <"$stamps"
  done | hf_median)"
}

# pipeline_peer_step STEP: the median over the peer's runs of the time its
# STEP took, summed over the services, in µs (whole).
pipeline_peer_step() {
  local sums step us median
  median=$(for sums in "$PIPELINE_WORK"/r*-peer/peer.sums; do
    [ -e "$sums" ] || continue
    while read -r step us; do
      [ "$step" != "$1" ] || printf '%s\n' "$us"
    done <"$sums"
  done | hf_median)
  printf '%s' "${median%.*}"
}

pipeline_pct() { printf '%.0f' "$(jq -n --argjson a "$1" --argjson b "$2" '100 * $a / $b')"; } # A B: A as % of B

pipeline_stage_label() { # STAGE
  case $1 in
    digest) printf 'os-digest (%s tags)' "$PIPELINE_SERVICES" ;;
    sign) printf 'os-sign (incl. key decryption)' ;;
    import-staging) printf 'os-import -> staging' ;;
    verify-staging) printf 'os-verify at staging' ;;
    import-prod) printf 'os-import -> prod' ;;
    verify-prod) printf 'os-verify at prod' ;;
    deploy) printf 'os-deploy render (%s files)' "$PIPELINE_SERVICES" ;;
  esac
}

pipeline_step_label() { # STEP
  case $1 in
    sign) printf 'cosign sign (dev)' ;;
    copy-staging) printf 'cosign copy dev -> staging' ;;
    verify-staging) printf 'cosign verify at staging' ;;
    copy-prod) printf 'cosign copy staging -> prod' ;;
    verify-prod) printf 'cosign verify at prod' ;;
    kubectl) printf 'kubectl set image --local' ;;
  esac
}

# --- the benchmark ------------------------------------------------------------------

declare -gA PIPELINE_IMPORT_NOTE=()
PIPELINE_BASELINE=""

bench_pipeline() {
  local runs=${RUNS:-3}
  OS_IMPORT=$BIN/os-import
  OS_DEPLOY=$BIN/os-deploy
  PIPELINE_BASELINE=${BENCH_BASELINE_BIN:-}
  local tool
  for tool in "$OS_DIGEST" "$OS_SIGN" "$OS_IMPORT" "$OS_VERIFY" "$OS_DEPLOY"; do
    [ -x "$tool" ] || reg_die "$tool was not built"
  done
  local baseline_versions="" version
  if [ -n "$PIPELINE_BASELINE" ]; then
    for tool in os-digest os-sign os-import os-verify os-deploy; do
      [ -x "$PIPELINE_BASELINE/$tool" ] || reg_die "BENCH_BASELINE_BIN=$PIPELINE_BASELINE has no executable $tool"
      # (Also the baseline's warm-up: each binary read once before it is timed.)
      version=$("$PIPELINE_BASELINE/$tool" --version) || reg_die "$PIPELINE_BASELINE/$tool --version failed"
      baseline_versions+="${baseline_versions:+, }$version"
    done
  fi
  for tool in cosign kubectl; do
    command -v "$tool" >/dev/null || reg_die "$tool is not installed (run scripts/setup)"
  done
  local load started=${EPOCHREALTIME//[!0-9]/}
  read -r load _ </proc/loadavg || load=unknown

  # Work files next to the registries (tmpfs unless --registry-disk).
  local storage work=""
  reg_mktemp work "${REG_STORAGE_TMPDIR:-}"
  PIPELINE_WORK=$work
  say "pipeline: starting the registries (dev, staging, prod), pushing $PIPELINE_SERVICES images x $PIPELINE_LAYERS layers x $((PIPELINE_LAYER_SIZE / 1048576)) MiB to dev (once)"
  HARNESS_CONTROL=$work/control
  harness_start dev staging prod
  PIPELINE_DEV=${HARNESS[dev_host]} PIPELINE_DEV_PID=${HARNESS[dev_pid]}
  storage="${HARNESS[dev_dir]%/*} ($(stat -f -c %T "${HARNESS[dev_dir]}"))"
  PIPELINE_HOME=$work/home # cosign's HOME: offline, no ~/.sigstore
  mkdir -p "$PIPELINE_HOME"
  PIPELINE_KEY=$work/bench
  COSIGN_PASSWORD=$PIPELINE_PASSWORD "$OS_SIGN" generate-key-pair --output-key-prefix "$PIPELINE_KEY" 2>"$work/keygen.log" ||
    reg_die "os-sign generate-key-pair failed: $(cat "$work/keygen.log")"
  local key_id key_us start
  key_id=$(sed -n 's/.*key id \(sha256:[0-9a-f]*\).*/\1/p' "$work/keygen.log")
  # What every signing process pays before its first request (scrypt).
  start=${EPOCHREALTIME//[!0-9]/}
  COSIGN_PASSWORD=$PIPELINE_PASSWORD "$OS_SIGN" public-key --key "$PIPELINE_KEY.key" >"$work/public.pem"
  key_us=$((${EPOCHREALTIME//[!0-9]/} - start))
  cmp -s "$work/public.pem" "$PIPELINE_KEY.pub" || reg_die "os-sign public-key does not give back $PIPELINE_KEY.pub"
  # The images, each with its own incompressible layers, at dev/seed/svcN.
  local l layers=()
  for ((l = 1; l <= PIPELINE_LAYERS; l++)); do layers+=(--layer "pipeline-@-$l:$PIPELINE_LAYER_SIZE"); done
  "$BIN/bench-env" push-set --host "$PIPELINE_DEV" --prefix seed --count "$PIPELINE_SERVICES" --tag "$PIPELINE_TAG" \
    "${layers[@]}" >"$work/seed.set" 2>"$work/seed.err" ||
    reg_die "bench-env push-set of the seed images failed: $(tail -n 3 "$work/seed.err")"
  say "pipeline: set-up took $(us_ms $((${EPOCHREALTIME//[!0-9]/} - started))) ms"

  export BIN PIPELINE_WORK PIPELINE_DEV PIPELINE_DEV_PID PIPELINE_HOME PIPELINE_KEY PIPELINE_PASSWORD PIPELINE_TAG \
    PIPELINE_SERVICES PIPELINE_STAGES PIPELINE_PEER_STEPS PIPELINE_BASELINE HARNESS_CONTROL REG_ACCEPT REG_PROG
  export -f pipeline_next pipeline_run pipeline_check_last pipeline_fixture pipeline_targets harness_restart \
    pipeline_tool pipeline_stage pipeline_os pipeline_peer pipeline_peer_hop pipeline_cosign \
    pipeline_check_os pipeline_check_peer pipeline_check_prod pipeline_prod_refs pipeline_check_images pipeline_check_records \
    sign_check_cosign_verify pipeline_alone pipeline_alone_next hf_cpu_us hf_wchar hf_cpu_open hf_cpu_close reg_die

  # Once: the pipe's stages alone (also the os-* tools' warm-up); the
  # peer's warm-up: one service through its script.
  say "pipeline: the pipe's stages one at a time, once (where its time goes; warm-up)"
  pipeline_stages_alone
  say "pipeline: the peer script on one service (warm-up)"
  pipeline_fixture warm warm/peer
  head -n 1 "$work/warm/peer.list" >"$work/warm/peer.one"
  mv -- "$work/warm/peer.one" "$work/warm/peer.list"
  pipeline_targets
  pipeline_peer "$work/warm" "$PIPELINE_STAGING" "$PIPELINE_PROD"
  pipeline_check_peer "$work/warm" "the peer script (warm-up)"

  local keys=(os) key contenders=()
  [ -z "$PIPELINE_BASELINE" ] || keys+=(baseline)
  keys+=(peer)
  say "pipeline: $runs run$([ "$runs" -eq 1 ] || echo s) of each of ${#keys[@]} contenders (${keys[*]}), each on its own repositories in dev and fresh staging and prod (made in hyperfine's --prepare)"
  for key in "${keys[@]}"; do
    contenders+=(--prepare "pipeline_next $key" -n "$key" "pipeline_run $key")
  done
  local json=$work/pipeline.json
  hf_run "$json" --runs "$runs" "${contenders[@]}"
  hf_cpu_close
  pipeline_check_last # the last run, which no --prepare came after
  harness_stop

  # --- report ---
  local cosign_version os peer
  cosign_version=$(dpkg-query -W -f '${Version}' cosign 2>/dev/null) ||
    cosign_version=$(cosign version 2>/dev/null | awk '$1 == "GitVersion:" { print $2 }')
  os=$(hf_stat "$json" os median)
  peer=$(hf_stat "$json" peer median)
  echo
  echo "pipeline: $PIPELINE_SERVICES services x $PIPELINE_LAYERS layers x $((PIPELINE_LAYER_SIZE / 1048576)) MiB ($((PIPELINE_SERVICES * PIPELINE_LAYERS * PIPELINE_LAYER_SIZE / 1048576)) MiB), signed in dev, dev -> staging -> prod, verified at each stage, $PIPELINE_SERVICES Deployments pinned by digest; $runs round$([ "$runs" -eq 1 ] || echo s), median wall time"
  echo "  $("$OS_DIGEST" --version), $("$OS_SIGN" --version), $("$OS_IMPORT" --version), $("$OS_VERIFY" --version), $("$OS_DEPLOY" --version) (defaults: --jobs 8)"
  [ -z "$PIPELINE_BASELINE" ] ||
    echo "  baseline (BENCH_BASELINE_BIN=$PIPELINE_BASELINE): $baseline_versions"
  echo "  cosign $cosign_version (offline: --key, --tlog-upload=false / --insecure-ignore-tlog=true, a private HOME); kubectl $(kubectl version --client 2>/dev/null | awk 'NR == 1 { print $3 }'); $(docker-registry --version | awk '{ print "docker-registry", $NF }'); $(hyperfine --version); nproc $(nproc); load average $load at the start"
  echo "  registries: dev (filled once; every contender of every round signs its own copies of the images there), fresh staging and prod for every contender of every round; storage $storage"
  echo "  key: ECDSA P-256 (os-sign generate-key-pair, $key_id), encrypted: decrypting it (scrypt) took $(us_ms "$key_us") ms, paid by every os-sign and cosign sign process"
  echo "  the peer is given each image's digest (the build's output); the pipe resolves the tags itself (os-digest)"
  echo "  cpu columns (ms): user + system CPU of the contender's processes (hyperfine's mean over the rounds); of the three registries meanwhile (median, from /proc/PID/stat)"
  echo
  printf '  %-52s %9s %8s %8s %8s %10s %13s\n' contender "median ms" "min ms" "max ms" "vs pipe" "client cpu" "registry cpu"
  local label median
  for key in "${keys[@]}"; do
    case $key in
      os) label="os-* pipe, 7 processes for all $PIPELINE_SERVICES" ;;
      baseline) label="os-* pipe (baseline $PIPELINE_BASELINE)" ;;
      peer) label="peer script, 6 commands x $PIPELINE_SERVICES services" ;;
    esac
    median=$(hf_stat "$json" "$key" median)
    printf '  %-52s %9s %8s %8s %8s %10s %13s\n' "$label" "$median" \
      "$(hf_stat "$json" "$key" min)" "$(hf_stat "$json" "$key" max)" "$(hf_ratio "$median" "$os" %.2fx)" \
      "$(hf_client_cpu "$json" "$key")" "$(hf_cpu_median "$key")"
  done
  local os_client os_server
  os_client=$(hf_client_cpu "$json" os)
  os_server=$(hf_cpu_median os)
  if [ -n "$PIPELINE_BASELINE" ]; then
    local base base_client
    base=$(hf_stat "$json" baseline median)
    base_client=$(hf_client_cpu "$json" baseline)
    echo
    echo "new vs baseline: the os-* pipe took $(hf_ratio "$os" "$base" %.3fx) the baseline's median wall time ($os ms vs $base ms; below 1 is faster), $(hf_ratio "$os_client" "$base_client" %.3fx) its client cpu ($os_client ms vs $base_client ms), $(hf_ratio "$os_server" "$(hf_cpu_median baseline)" %.3fx) its registry cpu"
  fi

  echo
  echo "where the pipe's time goes:"
  echo "  CPU: the registries $os_server ms + the tools $os_client ms in $os ms of wall time on $(nproc) cores ($(hf_ratio "$(jq -n "$os_server + $os_client")" "$os" %.1f) cores busy on average; load average $load at the start, $(cut -d' ' -f1 /proc/loadavg) at the end)"
  echo "  finished at: in the pipe (median over the rounds), when each stage's process exited, ms after the pipe started (the stages overlap: each starts on the first record it reads)"
  echo "  alone: each stage on its own (once, before the rounds, fresh staging and prod, the previous stage's records from a file), with its CPU and the registries' meanwhile"
  local alone_json=$work/alone.json alone_cpu=$work/alone.cpu alone_sum stage alone
  printf '    %-34s %12s %10s %8s %11s %13s' stage "finished at" "alone ms" "% alone" "client cpu" "registry cpu"
  [ -z "$PIPELINE_BASELINE" ] || printf ' %12s' "baseline at"
  echo
  alone_sum=$(jq -r '[.results[] | select(.command | startswith("alone:")) | .median] | add * 1000' "$alone_json")
  for stage in $PIPELINE_STAGES; do
    alone=$(hf_stat "$alone_json" "alone:$stage" median)
    printf '    %-34s %12s %10s %7s%% %11s %13s' "$(pipeline_stage_label "$stage")" "$(pipeline_finished os "$stage")" \
      "$alone" "$(pipeline_pct "$alone" "$alone_sum")" "$(hf_client_cpu "$alone_json" "alone:$stage")" \
      "$(HF_CPU_LOG=$alone_cpu hf_cpu_median "alone:$stage")"
    [ -z "$PIPELINE_BASELINE" ] || printf ' %12s' "$(pipeline_finished baseline "$stage")"
    echo
  done
  printf '    %-34s %12s %10.1f\n' "sum of the stages alone" "" "$alone_sum"
  echo "  os-import -> staging (alone): ${PIPELINE_IMPORT_NOTE[staging]}"
  echo "  os-import -> prod (alone): ${PIPELINE_IMPORT_NOTE[prod]}"

  echo
  echo "where the peer's time goes (median per round, summed over the $PIPELINE_SERVICES services):"
  printf '    %-34s %12s %12s %8s\n' step "ms" "per service" "% of it"
  local step peer_sum=0
  local -A peer_us=()
  for step in $PIPELINE_PEER_STEPS; do
    peer_us[$step]=$(pipeline_peer_step "$step")
    peer_sum=$((peer_sum + peer_us[$step]))
  done
  for step in $PIPELINE_PEER_STEPS; do
    printf '    %-34s %12s %12s %7s%%\n' "$(pipeline_step_label "$step")" "$(us_ms "${peer_us[$step]}")" \
      "$(us_ms $((peer_us[$step] / PIPELINE_SERVICES)))" "$(pipeline_pct "${peer_us[$step]}" "$peer_sum")"
  done

  local verified=0 n dir
  for dir in "$work"/r*-os; do
    read -r n <"$dir/cosign.ok" || reg_die "$dir: the os-* pipe's run was not checked"
    verified=$((verified + n))
  done
  echo
  echo "targets:"
  hf_target "the os-* pipe at least 3x faster than the peer script ($(hf_ratio "$peer" "$os" %.2fx): $os ms vs $peer ms)" \
    "$peer" "$os" 'a >= 3 * b'
  hf_target "every os-sign signature in prod verifiable by cosign verify --key ($verified of $((runs * PIPELINE_SERVICES)) over the rounds)" \
    "$verified" "$((runs * PIPELINE_SERVICES))" 'a == b'
  local said who
  said=$(for key in "${keys[@]}"; do
    case $key in os) who="" ;; baseline) who="baseline " ;; *) continue ;; esac
    for dir in "$work"/r*-"$key"; do
      for stage in $PIPELINE_STAGES; do
        [ ! -s "$dir/$stage.err" ] || printf '%s%s: %s\n' "$who" "$stage" "$(head -n 2 "$dir/$stage.err" | tr '\n' ' ')"
      done
    done
  done | sort | uniq -c)
  if [ -n "$said" ]; then
    echo "the os-* tools wrote on stderr (not a terminal):"
    while read -r n label; do
      printf '  %s (in %d of %d rounds)\n' "$label" "$n" "$runs"
    done <<<"$said"
  fi
  echo "checked (every round, outside the timers): prod holds every image's exact manifest bytes (every contender); cosign verify --key accepts every os-sign signature in prod; the rendered YAML (os-deploy) and kubectl's output pin every service to <prod image>@<digest> and nothing else; os-deploy's records carry no error, the steps digest sign import verify import verify deploy, the signature carried to staging, a verify event at staging and at prod"
  say "pipeline: took $(us_ms $((${EPOCHREALTIME//[!0-9]/} - started))) ms"
}
