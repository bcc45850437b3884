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
# --local.
#
# Registries: dev is started and filled once (the layers pushed once to
# seed/svcNN, then mounted into a repository path of its own for every
# contender of every round, rR/os/svcNN or rR/peer/svcNN, before the timer:
# both contenders sign in dev, so neither may find the other's signatures);
# staging and prod are fresh for every contender of every round.
#
# Sourced by scripts/bench after its helpers (say, now_us, bench_stats,
# fmt_ms, bench_target, registry_storage, children_cpu_us, process_cpu_us,
# median_ms and MEASURE_*, sign_check_cosign_verify) and the release build
# ($BIN); uses reg_* from scripts/lib/registry.sh.
# Defines bench_pipeline.
#
# Variables set here are read across functions:
# shellcheck disable=SC2034

PIPELINE_SERVICES=20
PIPELINE_LAYERS=3
PIPELINE_LAYER_SIZE=$((8 * 1024 * 1024))
PIPELINE_TAG=1.0.0
PIPELINE_PASSWORD=bench-pipeline-password
# The pipe's stages, in order (names for the report and the stage stamps).
PIPELINE_STAGES=(digest sign import-staging verify-staging import-prod verify-prod deploy)
# The peer's steps, per service.
PIPELINE_PEER_STEPS=(sign copy-staging verify-staging copy-prod verify-prod kubectl)

# pipeline_now VAR: wall clock in µs into VAR, without a fork (bash 5).
pipeline_now() {
  local -n _pipeline_now=$1
  if [ -n "${EPOCHREALTIME:-}" ]; then
    _pipeline_now=${EPOCHREALTIME//[!0-9]/}
  else
    _pipeline_now=$(now_us)
  fi
}

pipeline_cosign() { HOME=$PIPELINE_HOME COSIGN_PASSWORD=$PIPELINE_PASSWORD cosign "$@" </dev/null; }

# --- dev: the images, pushed once ---------------------------------------------

# import_blob SEED SIZE FILE: SIZE incompressible bytes (AES-128-CTR
# keystream keyed by SEED) into FILE; prints the digest. Same SEED and SIZE,
# same bytes.
import_blob() {
  local seed=$1 size=$2 file=$3 key sum
  key=$(printf '%s' "$seed" | sha256sum)
  key=${key:0:32}
  sum=$(head -c "$size" /dev/zero |
    openssl enc -aes-128-ctr -K "$key" -iv 00000000000000000000000000000000 |
    tee "$file" | sha256sum)
  printf 'sha256:%s\n' "${sum%% *}"
}

# import_push_blob HOST REPO DIGEST FILE [FROM]: the blob at HOST/REPO,
# mounted from FROM (a repository of HOST) when given, else uploaded (POST,
# then one streaming PUT); skipped when already there.
import_push_blob() {
  local host=$1 repo=$2 digest=$3 file=$4 from=${5:-} base="http://$1/v2/$2" status location
  status=$(curl -s -o /dev/null -w '%{http_code}' -I "$base/blobs/$digest")
  [ "$status" = 200 ] && return 0
  if [ -n "$from" ]; then
    status=$(curl -s -X POST -o /dev/null -w '%{http_code}' "$base/blobs/uploads/?mount=$digest&from=$from")
    [ "$status" = 201 ] && return 0
    reg_die "mounting $digest from $from into $host/$repo answered $status"
  fi
  location=$(curl -fsS -X POST -o /dev/null -w '%header{location}' "$base/blobs/uploads/") ||
    reg_die "POST $base/blobs/uploads/ failed"
  case $location in /*) location="http://$host$location" ;; esac
  case $location in *\?*) location="$location&digest=$digest" ;; *) location="$location?digest=$digest" ;; esac
  curl -fsS -X PUT -o /dev/null -H 'Content-Type: application/octet-stream' -T "$file" "$location" ||
    reg_die "uploading $digest ($file) to $base failed"
}


# pipeline_seed: pushes the services' images to dev as seed/svcNN:TAG, each
# with its own 3 incompressible 8 MiB layers and a config naming it. Writes
# $PIPELINE_WORK/images/svcNN.json (the manifest) and images.set
# ("svcNN DIGEST" lines).
pipeline_seed() {
  local work=$PIPELINE_WORK i l svc digest layers diff_ids joined cfg cfgsize answer
  mkdir -p "$work/images"
  : >"$work/images.set"
  for ((i = 1; i <= PIPELINE_SERVICES; i++)); do
    printf -v svc 'svc%02d' "$i"
    layers=() diff_ids=()
    for ((l = 1; l <= PIPELINE_LAYERS; l++)); do
      digest=$(import_blob "pipeline-$svc-$l" "$PIPELINE_LAYER_SIZE" "$work/blob")
      import_push_blob "$PIPELINE_DEV" "seed/$svc" "$digest" "$work/blob"
      layers+=("$(printf '{"mediaType":"%s","digest":"%s","size":%s}' "$REG_OCI_LAYER" "$digest" "$PIPELINE_LAYER_SIZE")")
      diff_ids+=("\"$digest\"")
    done
    rm -f -- "$work/blob"
    joined=$(IFS=,; printf '%s' "${diff_ids[*]}")
    printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/app/%s"],"Labels":{"dev.onestream.bench":"pipeline/%s"}},"rootfs":{"type":"layers","diff_ids":[%s]}}' \
      "$svc" "$svc" "$joined" >"$work/config.json"
    cfg=$(sha256sum <"$work/config.json") cfg=sha256:${cfg%% *}
    cfgsize=$(stat -c %s "$work/config.json")
    import_push_blob "$PIPELINE_DEV" "seed/$svc" "$cfg" "$work/config.json"
    joined=$(IFS=,; printf '%s' "${layers[*]}")
    printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"%s","digest":"%s","size":%s},"layers":[%s]}' \
      "$REG_OCI_MANIFEST" "$REG_OCI_CONFIG" "$cfg" "$cfgsize" "$joined" >"$work/images/$svc.json"
    digest=$(sha256sum <"$work/images/$svc.json") digest=sha256:${digest%% *}
    answer=$(curl -sS -X PUT -H "Content-Type: $REG_OCI_MANIFEST" -T "$work/images/$svc.json" -o /dev/null \
      -w '%{http_code} %header{docker-content-digest}' "http://$PIPELINE_DEV/v2/seed/$svc/manifests/$PIPELINE_TAG")
    [ "$answer" = "201 $digest" ] || reg_die "pushing $PIPELINE_DEV/seed/$svc:$PIPELINE_TAG answered '$answer', expected '201 $digest'"
    printf '%s %s\n' "$svc" "$digest" >>"$work/images.set"
  done
}

# pipeline_fixture NAME PREFIX: everything a contender needs, made before its
# timer, in $PIPELINE_WORK/NAME/: the images at dev/PREFIX/svcNN:TAG (their
# blobs mounted from seed/svcNN: one curl process for the mounts, one for
# the manifests), manifests/svcNN.yaml (a Deployment naming the image by
# its dev tag), refs (the dev references, for os-digest) and peer.list
# ("svcNN dev/PREFIX/svcNN DIGEST", for the peer script).
pipeline_fixture() {
  local name=$1 prefix=$2 dir=$PIPELINE_WORK/$1 svc digest blob mounts=() puts=() out bad
  rm -rf -- "$dir"
  mkdir -p "$dir/manifests"
  : >"$dir/refs"
  : >"$dir/peer.list"
  while read -r svc digest; do
    for blob in $(jq -r '.config.digest, .layers[].digest' "$PIPELINE_WORK/images/$svc.json"); do
      mounts+=(-o /dev/null "http://$PIPELINE_DEV/v2/$prefix/$svc/blobs/uploads/?mount=$blob&from=seed/$svc")
    done
    puts+=(-T "$PIPELINE_WORK/images/$svc.json" -o /dev/null "http://$PIPELINE_DEV/v2/$prefix/$svc/manifests/$PIPELINE_TAG")
    printf '%s/%s/%s:%s\n' "$PIPELINE_DEV" "$prefix" "$svc" "$PIPELINE_TAG" >>"$dir/refs"
    printf '%s %s/%s/%s %s\n' "$svc" "$PIPELINE_DEV" "$prefix" "$svc" "$digest" >>"$dir/peer.list"
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
          image: $PIPELINE_DEV/$prefix/$svc:$PIPELINE_TAG # the build's tag
          ports:
            - containerPort: 8080
YAML
  done <"$PIPELINE_WORK/images.set"
  out=$(curl -sS -X POST -w '%{http_code}\n' "${mounts[@]}")
  bad=$(grep -vx 201 <<<"$out" || true)
  [ -z "$bad" ] || reg_die "mounting the seed blobs into dev/$prefix answered: $(sort <<<"$bad" | uniq -c | tr '\n' ' ')"
  out=$(curl -sS -H "Content-Type: $REG_OCI_MANIFEST" -w '%{http_code}\n' "${puts[@]}")
  bad=$(grep -vx 201 <<<"$out" || true)
  [ -z "$bad" ] || reg_die "pushing the manifests to dev/$prefix answered: $(sort <<<"$bad" | uniq -c | tr '\n' ' ')"
}

# pipeline_targets: fresh staging and prod registries.
pipeline_targets() {
  reg_start staging
  reg_start prod
  PIPELINE_STAGING=${REG_HOST[staging]}
  PIPELINE_PROD=${REG_HOST[prod]}
}

# pipeline_targets_done: stops them and drops their storage (tmpfs is memory).
pipeline_targets_done() {
  local name dir
  for name in staging prod; do
    dir=${REG_DIR[$name]}
    reg_stop "$name"
    rm -rf -- "$dir"
  done
}

# --- the contenders -------------------------------------------------------------
# Each dies with the tool's own words if it fails: a benchmark of a job that
# was not done would mean nothing.

# pipeline_stage STAMPS NAME CMD...: runs CMD (one stage of the pipe, in the
# pipe's own subshell), closes its ends of the pipe, then appends "NAME µs"
# (when it finished) to STAMPS.
pipeline_stage() {
  local stamps=$1 name=$2 status=0 end
  shift 2
  "$@" || status=$?
  exec <&- >&-
  pipeline_now end
  printf '%s %s\n' "$name" "$end" >>"$stamps"
  return "$status"
}

# pipeline_os DIR STAGING PROD: the pipe, one process per tool.
pipeline_os() {
  local dir=$1 staging=$2 prod=$3 statuses start
  pipeline_now start
  printf 'start %s\n' "$start" >"$dir/stamps"
  set +e
  pipeline_stage "$dir/stamps" digest "$OS_DIGEST" --service-from-repo <"$dir/refs" 2>"$dir/digest.err" |
    pipeline_stage "$dir/stamps" sign env COSIGN_PASSWORD="$PIPELINE_PASSWORD" "$OS_SIGN" --key "$PIPELINE_KEY.key" 2>"$dir/sign.err" |
    pipeline_stage "$dir/stamps" import-staging "$OS_IMPORT" --to "$staging" 2>"$dir/import-staging.err" |
    pipeline_stage "$dir/stamps" verify-staging "$OS_VERIFY" --key "$PIPELINE_KEY.pub" 2>"$dir/verify-staging.err" |
    pipeline_stage "$dir/stamps" import-prod "$OS_IMPORT" --to "$prod" 2>"$dir/import-prod.err" |
    pipeline_stage "$dir/stamps" verify-prod "$OS_VERIFY" --key "$PIPELINE_KEY.pub" 2>"$dir/verify-prod.err" |
    pipeline_stage "$dir/stamps" deploy "$OS_DEPLOY" render "$dir/manifests" --records-out "$dir/records.jsonl" \
      >"$dir/rendered.yaml" 2>"$dir/deploy.err"
  statuses="${PIPESTATUS[*]}"
  set -e
  [ "$statuses" = "0 0 0 0 0 0 0" ] ||
    reg_die "the os-* pipe exited $statuses (${PIPELINE_STAGES[*]}); stderr:
$(for s in "${PIPELINE_STAGES[@]}"; do [ -s "$dir/$s.err" ] && printf '%s: %s\n' "$s" "$(tail -n 3 "$dir/$s.err")"; done)
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
  pipeline_now t1
  ((sum[copy-$stage] += t1 - t0)); t0=$t1
  pipeline_cosign verify --key "$PIPELINE_KEY.pub" --insecure-ignore-tlog=true --allow-http-registry \
    "$to@$digest" >>"$dir/verified-$stage" 2>>"$log" ||
    reg_die "cosign verify $to@$digest failed: $(tail -n 5 "$log")"
  pipeline_now t1
  ((sum[verify-$stage] += t1 - t0)); t0=$t1
}

# pipeline_peer DIR STAGING PROD: the peer script, service after service.
# Adds each step's time (µs, summed over the services) to PIPELINE_PEER_US.
declare -gA PIPELINE_PEER_US=()
pipeline_peer() {
  local dir=$1 staging=$2 prod=$3 svc src digest path log=$1/peer.log t0 t1 step
  declare -A sum=()
  for step in "${PIPELINE_PEER_STEPS[@]}"; do sum[$step]=0; done
  : >"$log"
  : >"$dir/verified-staging"
  : >"$dir/verified-prod"
  mkdir -p "$dir/out"
  while read -r svc src digest; do
    path=${src#*/}
    pipeline_now t0
    pipeline_cosign sign --yes --key "$PIPELINE_KEY.key" --tlog-upload=false --allow-http-registry \
      "$src@$digest" >>"$log" 2>&1 || reg_die "cosign sign $src@$digest failed: $(tail -n 5 "$log")"
    pipeline_now t1
    ((sum[sign] += t1 - t0)); t0=$t1
    pipeline_peer_hop "$src" "$staging/$path" staging
    pipeline_peer_hop "$staging/$path" "$prod/$path" prod
    kubectl set image --local -o yaml -f "$dir/manifests/$svc.yaml" "app=$prod/$path@$digest" </dev/null \
      >"$dir/out/$svc.yaml" 2>>"$log" || reg_die "kubectl set image --local on $svc.yaml failed: $(tail -n 5 "$log")"
    pipeline_now t1
    ((sum[kubectl] += t1 - t0))
  done <"$dir/peer.list"
  for step in "${PIPELINE_PEER_STEPS[@]}"; do
    PIPELINE_PEER_US[$step]+="${sum[$step]} "
  done
}

# pipeline_registries_cpu VAR: the CPU time (µs) the running registries
# (dev, staging, prod) have used so far, summed.
pipeline_registries_cpu() {
  local -n _pipeline_cpu=$1
  local reg cpu
  _pipeline_cpu=0
  for reg in dev staging prod; do
    [ -n "${REG_PID[$reg]:-}" ] || continue
    process_cpu_us cpu "${REG_PID[$reg]}"
    _pipeline_cpu=$((_pipeline_cpu + ${cpu:-0}))
  done
}

# pipeline_measure NAME SCRATCH CMD...: runs CMD; appends its wall time, its
# processes' CPU time and the three registries' CPU time meanwhile (µs) to
# MEASURE_WALL/CLIENT/SERVER[NAME] (scripts/bench's tables).
# (They are associative arrays, declared in scripts/bench:)
# shellcheck disable=SC2004
pipeline_measure() {
  local name=$1 scratch=$2 start end client0 client1 server0 server1
  shift 2
  children_cpu_us client0 "$scratch"
  pipeline_registries_cpu server0
  pipeline_now start
  "$@"
  pipeline_now end
  pipeline_registries_cpu server1
  children_cpu_us client1 "$scratch"
  MEASURE_WALL[$name]+="$((end - start)) "
  MEASURE_CLIENT[$name]+="$((client1 - client0)) "
  MEASURE_SERVER[$name]+="$((server1 - server0)) "
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

# pipeline_check_images DIR FILE... WHAT: the image lines of FILE... are
# exactly PROD/PATH@DIGEST, one per service (nothing else, none missing).
pipeline_check_images() {
  local dir=$1 what=${*: -1} got want
  local files=("${@:2:$#-2}")
  got=$(cat "${files[@]}" | sed -n 's/^ *\(- \)\{0,1\}image: *\([^ #]*\).*/\2/p' | sort)
  want=$(awk -v prod="$PIPELINE_PROD" '{ p = $2; sub(/^[^\/]*\//, "", p); print prod "/" p "@" $3 }' "$dir/peer.list" | sort)
  [ "$got" = "$want" ] ||
    reg_die "$what pinned the wrong images; first differences (< got, > expected):"$'\n'"$(diff <(printf '%s\n' "$got") <(printf '%s\n' "$want") | head -n 8)"
}

# pipeline_check_records DIR: os-deploy's records: one per service, no
# error, at prod, the dev digest, every step of the pipe in its history,
# each verify event verified where the image then was.
pipeline_check_records() {
  local dir=$1 problem
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
  [ -z "$problem" ] || reg_die "the os-* pipe's records: $problem"
}

# pipeline_check_os DIR: everything the pipe promised.
pipeline_check_os() {
  local dir=$1 s
  pipeline_check_records "$dir"
  pipeline_check_prod "$dir" "$PIPELINE_PROD" "the os-* pipe"
  pipeline_check_images "$dir" "$dir/rendered.yaml" "os-deploy render"
  # The peer's verifier on os-sign's signatures, in prod: one call, 20 refs.
  local refs=()
  mapfile -t refs < <(awk -v prod="$PIPELINE_PROD" '{ p = $2; sub(/^[^\/]*\//, "", p); print prod "/" p "@" $3 }' "$dir/peer.list")
  pipeline_cosign verify --key "$PIPELINE_KEY.pub" --insecure-ignore-tlog=true --allow-http-registry "${refs[@]}" \
    >"$dir/cosign-verified" 2>"$dir/cosign-verified.err" ||
    reg_die "cosign verify of os-sign's signatures in prod failed (exit $?): $(tail -n 5 "$dir/cosign-verified.err")"
  awk '{ print $3 }' "$dir/peer.list" >"$dir/digests"
  sign_check_cosign_verify "$dir/cosign-verified" "cosign verify of os-sign's signatures in prod" "$dir/digests"
  PIPELINE_COSIGN_OK=$((PIPELINE_COSIGN_OK + ${#refs[@]}))
  for s in "${PIPELINE_STAGES[@]}"; do
    [ ! -s "$dir/$s.err" ] || PIPELINE_STDERR+=("$s: $(head -n 2 "$dir/$s.err" | tr '\n' ' ')")
  done
}

# pipeline_check_peer DIR: the peer's job done.
pipeline_check_peer() {
  local dir=$1
  pipeline_check_prod "$dir" "$PIPELINE_PROD" "the peer script"
  pipeline_check_images "$dir" "$dir"/out/*.yaml "kubectl set image --local"
  awk '{ print $3 }' "$dir/peer.list" >"$dir/digests"
  sign_check_cosign_verify "$dir/verified-staging" "the peer's cosign verify at staging" "$dir/digests"
  sign_check_cosign_verify "$dir/verified-prod" "the peer's cosign verify at prod" "$dir/digests"
}

# --- one contender, one round -----------------------------------------------------

pipeline_round_os() { # ROUND
  local dir=$PIPELINE_WORK/r$1-os
  pipeline_fixture "r$1-os" "r$1/os"
  pipeline_targets
  pipeline_measure os "$PIPELINE_SCRATCH" pipeline_os "$dir" "$PIPELINE_STAGING" "$PIPELINE_PROD"
  pipeline_check_os "$dir"
  # When each stage finished, µs after the pipe started.
  local name at start=""
  while read -r name at; do
    if [ "$name" = start ]; then start=$at; else PIPELINE_FINISHED[$name]+="$((at - start)) "; fi
  done <"$dir/stamps"
  pipeline_targets_done
}

pipeline_round_peer() { # ROUND
  local dir=$PIPELINE_WORK/r$1-peer
  pipeline_fixture "r$1-peer" "r$1/peer"
  pipeline_targets
  pipeline_measure peer "$PIPELINE_SCRATCH" pipeline_peer "$dir" "$PIPELINE_STAGING" "$PIPELINE_PROD"
  pipeline_check_peer "$dir"
  pipeline_targets_done
}

# pipeline_stages_alone: the pipe's stages one after another, each its own
# process reading the previous stage's records from a file, on fresh
# staging and prod: what each stage costs alone (once, outside the rounds;
# it doubles as the os-* tools' warm-up). Sets PIPELINE_ALONE[STAGE] (µs).
# pipeline_alone DIR STAGE IN OUT CMD...: one stage on its own, records
# from IN to OUT; its wall time, its CPU time and the registries' CPU time
# meanwhile (µs) into PIPELINE_ALONE[STAGE], PIPELINE_ALONE_CLIENT[STAGE],
# PIPELINE_ALONE_SERVER[STAGE].
declare -gA PIPELINE_ALONE=() PIPELINE_ALONE_CLIENT=() PIPELINE_ALONE_SERVER=()
pipeline_alone() {
  local dir=$1 stage=$2 in=$3 out=$4 t0 t1 c0 c1 r0 r1
  shift 4
  children_cpu_us c0 "$PIPELINE_SCRATCH"
  pipeline_registries_cpu r0
  pipeline_now t0
  "$@" <"$in" >"$out" 2>"$dir/$stage.err" ||
    reg_die "$stage alone failed (exit $?): $(tail -n 3 "$dir/$stage.err"); error records: $(jq -c 'select(.error) | .error' "$out" 2>/dev/null | head -n 2)"
  pipeline_now t1
  pipeline_registries_cpu r1
  children_cpu_us c1 "$PIPELINE_SCRATCH"
  PIPELINE_ALONE[$stage]=$((t1 - t0))
  PIPELINE_ALONE_CLIENT[$stage]=$((c1 - c0))
  PIPELINE_ALONE_SERVER[$stage]=$((r1 - r0))
}

pipeline_stages_alone() {
  local dir=$PIPELINE_WORK/alone
  pipeline_fixture alone alone/os
  pipeline_targets
  local staging=$PIPELINE_STAGING prod=$PIPELINE_PROD
  pipeline_alone "$dir" digest "$dir/refs" "$dir/1" "$OS_DIGEST" --service-from-repo
  pipeline_alone "$dir" sign "$dir/1" "$dir/2" env COSIGN_PASSWORD="$PIPELINE_PASSWORD" "$OS_SIGN" --key "$PIPELINE_KEY.key"
  pipeline_alone "$dir" import-staging "$dir/2" "$dir/3" "$OS_IMPORT" --to "$staging"
  pipeline_alone "$dir" verify-staging "$dir/3" "$dir/4" "$OS_VERIFY" --key "$PIPELINE_KEY.pub"
  pipeline_alone "$dir" import-prod "$dir/4" "$dir/5" "$OS_IMPORT" --to "$prod"
  pipeline_alone "$dir" verify-prod "$dir/5" "$dir/6" "$OS_VERIFY" --key "$PIPELINE_KEY.pub"
  pipeline_alone "$dir" deploy "$dir/6" "$dir/rendered.yaml" "$OS_DEPLOY" render "$dir/manifests" --records-out "$dir/records.jsonl"
  pipeline_check_records "$dir"
  pipeline_check_prod "$dir" "$prod" "the os-* stages run alone"
  pipeline_check_images "$dir" "$dir/rendered.yaml" "os-deploy render (stages alone)"
  # What the import events say: the sum of their durations (records are
  # imported 8 at a time, so this is more than the stage's wall time), the
  # slowest record, the bytes sent.
  PIPELINE_IMPORT_NOTE[staging]=$(jq -rs '[.[].history[-1]] | "\((map(.bytes) | add) / 1048576 | floor) MiB sent, \(map(.blobsCopied) | add) blobs copied, \(map(.blobsMounted) | add) mounted; per record: median \(map(.durationMs) | sort | .[length / 2 | floor]) ms, slowest \(map(.durationMs) | max) ms"' "$dir/3")
  PIPELINE_IMPORT_NOTE[prod]=$(jq -rs '[.[].history[-1]] | "\((map(.bytes) | add) / 1048576 | floor) MiB sent, \(map(.blobsCopied) | add) blobs copied, \(map(.blobsMounted) | add) mounted; per record: median \(map(.durationMs) | sort | .[length / 2 | floor]) ms, slowest \(map(.durationMs) | max) ms"' "$dir/5")
  pipeline_targets_done
}

# --- the benchmark ------------------------------------------------------------------

declare -gA PIPELINE_FINISHED=() PIPELINE_IMPORT_NOTE=()
PIPELINE_STDERR=()
PIPELINE_COSIGN_OK=0

bench_pipeline() {
  local runs=${RUNS:-3}
  OS_IMPORT=$BIN/os-import
  OS_DEPLOY=$BIN/os-deploy
  local tool
  for tool in "$OS_DIGEST" "$OS_SIGN" "$OS_IMPORT" "$OS_VERIFY" "$OS_DEPLOY"; do
    [ -x "$tool" ] || reg_die "$tool was not built"
  done
  for tool in cosign kubectl openssl; do
    command -v "$tool" >/dev/null || reg_die "$tool is not installed (run scripts/setup)"
  done
  local load started
  read -r load _ </proc/loadavg || load=unknown
  pipeline_now started

  say "pipeline: starting dev, pushing $PIPELINE_SERVICES images x $PIPELINE_LAYERS layers x $((PIPELINE_LAYER_SIZE / 1048576)) MiB (once)"
  reg_start dev
  PIPELINE_DEV=${REG_HOST[dev]}
  local storage work=""
  storage=$(registry_storage dev)
  # Blobs and files next to the registries (tmpfs unless --registry-disk).
  reg_mktemp work "${REG_STORAGE_TMPDIR:-}"
  PIPELINE_WORK=$work
  PIPELINE_SCRATCH=$work/times
  PIPELINE_HOME=$work/home # cosign's HOME: offline, no ~/.sigstore
  mkdir -p "$PIPELINE_HOME"
  PIPELINE_KEY=$work/bench
  COSIGN_PASSWORD=$PIPELINE_PASSWORD "$OS_SIGN" generate-key-pair --output-key-prefix "$PIPELINE_KEY" 2>"$work/keygen.log" ||
    reg_die "os-sign generate-key-pair failed: $(cat "$work/keygen.log")"
  local key_id key_us t0 t1
  key_id=$(sed -n 's/.*key id \(sha256:[0-9a-f]*\).*/\1/p' "$work/keygen.log")
  # What every signing process pays before its first request (scrypt).
  pipeline_now t0
  COSIGN_PASSWORD=$PIPELINE_PASSWORD "$OS_SIGN" public-key --key "$PIPELINE_KEY.key" >"$work/public.pem"
  pipeline_now t1
  key_us=$((t1 - t0))
  cmp -s "$work/public.pem" "$PIPELINE_KEY.pub" || reg_die "os-sign public-key does not give back $PIPELINE_KEY.pub"
  pipeline_seed
  pipeline_now t1
  say "pipeline: set-up took $(fmt_ms $((t1 - started))) ms"

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
  pipeline_check_peer "$work/warm"
  pipeline_targets_done
  PIPELINE_PEER_US=()

  local round
  for ((round = 1; round <= runs; round++)); do
    pipeline_round_os "$round"
    pipeline_round_peer "$round"
    say "pipeline: round $round/$runs (ms): os-* pipe $(last_ms os), peer script $(last_ms peer)"
  done
  reg_stop dev

  # --- report ---
  local cosign_version os peer
  cosign_version=$(dpkg-query -W -f '${Version}' cosign 2>/dev/null) ||
    cosign_version=$(cosign version 2>/dev/null | awk '$1 == "GitVersion:" { print $2 }')
  os=$(median_ms WALL os)
  peer=$(median_ms WALL peer)
  echo
  echo "pipeline: $PIPELINE_SERVICES services x $PIPELINE_LAYERS layers x $((PIPELINE_LAYER_SIZE / 1048576)) MiB ($((PIPELINE_SERVICES * PIPELINE_LAYERS * PIPELINE_LAYER_SIZE / 1048576)) MiB), signed in dev, dev -> staging -> prod, verified at each stage, $PIPELINE_SERVICES Deployments pinned by digest; $runs round$([ "$runs" -eq 1 ] || echo s), median wall time"
  echo "  $("$OS_DIGEST" --version), $("$OS_SIGN" --version), $("$OS_IMPORT" --version), $("$OS_VERIFY" --version), $("$OS_DEPLOY" --version) (defaults: --jobs 8)"
  echo "  cosign $cosign_version (offline: --key, --tlog-upload=false / --insecure-ignore-tlog=true, a private HOME); kubectl $(kubectl version --client 2>/dev/null | awk 'NR == 1 { print $3 }'); $(docker-registry --version | awk '{ print "docker-registry", $NF }'); nproc $(nproc); load average $load at the start"
  echo "  registries: dev (filled once; every contender of every round signs its own repositories there), fresh staging and prod for every contender of every round; storage $storage"
  echo "  key: ECDSA P-256 (os-sign generate-key-pair, $key_id), encrypted: decrypting it (scrypt) took $(fmt_ms "$key_us") ms, paid by every os-sign and cosign sign process"
  echo "  the peer is given each image's digest (the build's output); the pipe resolves the tags itself (os-digest)"
  echo "  cpu columns (median ms): user + system CPU of the contender's processes; of the three registries meanwhile"
  echo
  printf '  %-52s %9s %8s %8s %8s %10s %13s\n' contender "median ms" "min ms" "max ms" "vs pipe" "client cpu" "registry cpu"
  local row key label median min max samples=()
  for row in \
    "os|os-* pipe, 7 processes for all $PIPELINE_SERVICES" \
    "peer|peer script, 6 commands x $PIPELINE_SERVICES services"; do
    IFS='|' read -r key label <<<"$row"
    read -r -a samples <<<"${MEASURE_WALL[$key]}"
    read -r median min max < <(bench_stats "${samples[@]}")
    printf '  %-52s %9s %8s %8s %8s %10s %13s\n' "$label" "$median" "$min" "$max" \
      "$(awk -v a="$median" -v b="$os" 'BEGIN { printf "%.2fx", a / b }')" \
      "$(median_ms CLIENT "$key")" "$(median_ms SERVER "$key")"
  done

  echo
  echo "where the pipe's time goes:"
  local os_client os_server
  os_client=$(median_ms CLIENT os)
  os_server=$(median_ms SERVER os)
  echo "  CPU: the registries $os_server ms + the tools $os_client ms in $os ms of wall time on $(nproc) cores ($(awk -v a="$os_server" -v b="$os_client" -v w="$os" 'BEGIN { printf "%.1f", (a + b) / w }') cores busy on average; load average $load at the start, $(cut -d' ' -f1 /proc/loadavg) at the end)"
  echo "  finished at: in the pipe (median over the rounds), when each stage's process exited, ms after the pipe started (the stages overlap: each starts on the first record it reads)"
  echo "  alone: each stage on its own (once, before the rounds, fresh staging and prod, the previous stage's records from a file), with its CPU and the registries' meanwhile"
  printf '    %-34s %12s %10s %8s %11s %13s\n' stage "finished at" "alone ms" "% alone" "client cpu" "registry cpu"
  local stage step alone_sum=0 finished alone
  for stage in "${PIPELINE_STAGES[@]}"; do alone_sum=$((alone_sum + PIPELINE_ALONE[$stage])); done
  for stage in "${PIPELINE_STAGES[@]}"; do
    read -r -a samples <<<"${PIPELINE_FINISHED[$stage]:-}"
    finished=-
    [ "${#samples[@]}" -eq 0 ] || read -r finished _ _ < <(bench_stats "${samples[@]}")
    alone=${PIPELINE_ALONE[$stage]}
    case $stage in
      digest) label="os-digest ($PIPELINE_SERVICES tags)" ;;
      sign) label="os-sign (incl. key decryption)" ;;
      import-staging) label="os-import -> staging" ;;
      verify-staging) label="os-verify at staging" ;;
      import-prod) label="os-import -> prod" ;;
      verify-prod) label="os-verify at prod" ;;
      deploy) label="os-deploy render ($PIPELINE_SERVICES files)" ;;
    esac
    printf '    %-34s %12s %10s %7s%% %11s %13s\n' "$label" "$finished" "$(fmt_ms "$alone")" \
      "$(awk -v a="$alone" -v s="$alone_sum" 'BEGIN { printf "%.0f", 100 * a / s }')" \
      "$(fmt_ms "${PIPELINE_ALONE_CLIENT[$stage]}")" "$(fmt_ms "${PIPELINE_ALONE_SERVER[$stage]}")"
  done
  printf '    %-34s %12s %10s\n' "sum of the stages alone" "" "$(fmt_ms "$alone_sum")"
  echo "  os-import -> staging (alone): ${PIPELINE_IMPORT_NOTE[staging]}"
  echo "  os-import -> prod (alone): ${PIPELINE_IMPORT_NOTE[prod]}"

  echo
  echo "where the peer's time goes (median per round, summed over the $PIPELINE_SERVICES services):"
  printf '    %-34s %12s %12s %8s\n' step "ms" "per service" "% of it"
  local peer_sum=0 ms
  declare -A peer_med=()
  for step in "${PIPELINE_PEER_STEPS[@]}"; do
    read -r -a samples <<<"${PIPELINE_PEER_US[$step]}"
    read -r ms _ _ < <(bench_stats "${samples[@]}")
    peer_med[$step]=$ms
    peer_sum=$(awk -v a="$peer_sum" -v b="$ms" 'BEGIN { print a + b }')
  done
  for step in "${PIPELINE_PEER_STEPS[@]}"; do
    case $step in
      sign) label="cosign sign (dev)" ;;
      copy-staging) label="cosign copy dev -> staging" ;;
      verify-staging) label="cosign verify at staging" ;;
      copy-prod) label="cosign copy staging -> prod" ;;
      verify-prod) label="cosign verify at prod" ;;
      kubectl) label="kubectl set image --local" ;;
    esac
    printf '    %-34s %12s %12s %7s%%\n' "$label" "${peer_med[$step]}" \
      "$(awk -v a="${peer_med[$step]}" -v n="$PIPELINE_SERVICES" 'BEGIN { printf "%.1f", a / n }')" \
      "$(awk -v a="${peer_med[$step]}" -v s="$peer_sum" 'BEGIN { printf "%.0f", 100 * a / s }')"
  done

  echo
  echo "targets:"
  bench_target "the os-* pipe at least 3x faster than the peer script ($(awk -v a="$peer" -v b="$os" 'BEGIN { printf "%.2fx", a / b }'): $os ms vs $peer ms)" \
    "$peer" "$os" 'a >= 3 * b'
  bench_target "every os-sign signature in prod verifiable by cosign verify --key ($PIPELINE_COSIGN_OK of $((runs * PIPELINE_SERVICES)) over the rounds)" \
    "$PIPELINE_COSIGN_OK" "$((runs * PIPELINE_SERVICES))" 'a == b'
  if [ "${#PIPELINE_STDERR[@]}" -gt 0 ]; then
    echo "the os-* tools wrote on stderr (not a terminal):"
    printf '%s\n' "${PIPELINE_STDERR[@]}" | sort | uniq -c |
      awk -v runs="$runs" '{ n = $1; sub(/^ *[0-9]+ /, ""); printf "  %s(in %d of %d rounds)\n", $0, n, runs }'
  fi
  echo "checked (every round, outside the timers): prod holds every image's exact manifest bytes (both contenders); cosign verify --key accepts every os-sign signature in prod; the rendered YAML (os-deploy) and kubectl's output pin every service to <prod image>@<digest> and nothing else; os-deploy's records carry no error, the steps digest sign import verify import verify deploy, the signature carried to staging, a verify event at staging and at prod"
  pipeline_now t1
  say "pipeline: took $(fmt_ms $((t1 - started))) ms"
}
