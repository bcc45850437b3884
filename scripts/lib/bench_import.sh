# shellcheck shell=bash
# The `import` benchmark of scripts/bench (sourced by it, after its helpers
# and the release build): os-import against skopeo copy (sequential and 4
# in parallel), cosign copy, oras cp -r and skopeo sync, on two throwaway
# registries from os-testkit's bench-env (dev, the source, filled once by
# bench-env push-set; prod, the target, replaced by a fresh one on empty
# storage before every run of every contender, in hyperfine's --prepare, so
# none finds another's blobs and skopeo's blob-info cache can mount nothing
# from a peer's repositories). Timed by hyperfine.
#
# Uses from scripts/bench: say, RUNS, BIN, OS_DIGEST; from
# scripts/lib/harness.sh: harness_*, hf_*; from scripts/lib/registry.sh:
# reg_*.
#
# Variables set here are read across functions:
# shellcheck disable=SC2034

IMPORT_TAG=1.0.0
IMPORT_PASSWORD=bench-import-password
MIB=$((1024 * 1024))

# --- the images -------------------------------------------------------------

# import_set NAME COUNT LAYER...: pushes COUNT images to dev as
# bench/NAME/svc1..COUNT (bench-env push-set), each with the layers given
# (SEED:SIZE; "@" in a seed becomes the image's number, so "x-@-1:8" is per
# image and "base:8" is shared by all: pushed once, then mounted). Writes
# $IMPORT_WORK/NAME.set ("REPO DIGEST" lines), NAME.records (os-digest's
# records, checked against the pushed digests) and sets IMPORT_BYTES[NAME]
# (the bytes of all images' layers) and IMPORT_UNIQUE[NAME] (of the
# distinct ones).
declare -gA IMPORT_BYTES=() IMPORT_UNIQUE=()
import_set() {
  local name=$1 count=$2 i layer spec total=0 unique=0 args=()
  shift 2
  local set=$IMPORT_WORK/$name.set
  declare -A seen=()
  for layer in "$@"; do args+=(--layer "$layer"); done
  for ((i = 1; i <= count; i++)); do
    for layer in "$@"; do
      spec=${layer//@/$i}
      total=$((total + ${spec#*:}))
      if [ -z "${seen[$spec]:-}" ]; then
        seen[$spec]=1
        unique=$((unique + ${spec#*:}))
      fi
    done
  done
  "$BIN/bench-env" push-set --host "$IMPORT_DEV" --prefix "bench/$name" --count "$count" --tag "$IMPORT_TAG" \
    "${args[@]}" >"$set" 2>"$IMPORT_WORK/$name.push-err" ||
    reg_die "bench-env push-set of the $name set failed: $(tail -n 3 "$IMPORT_WORK/$name.push-err")"
  IMPORT_BYTES[$name]=$total
  IMPORT_UNIQUE[$name]=$unique
  local repo digest
  while read -r repo digest; do
    printf '%s/%s:%s\n' "$IMPORT_DEV" "$repo" "$IMPORT_TAG"
  done <"$set" | "$OS_DIGEST" >"$IMPORT_WORK/$name.records" 2>"$IMPORT_WORK/$name.digest-err" ||
    reg_die "os-digest on the $name set failed: $(tail -n 3 "$IMPORT_WORK/$name.digest-err")"
  jq -r '.digest' "$IMPORT_WORK/$name.records" | cmp -s - <(while read -r _ digest; do printf '%s\n' "$digest"; done <"$set") ||
    reg_die "os-digest's digests for the $name set differ from the pushed ones:"$'\n'"$(head -n 3 "$IMPORT_WORK/$name.records")"
}

# import_sign NAME: signs every image of the set twice with cosign, as a
# team does today: a cosign signature (the sha256-<hex>.sig tag) and an OCI
# 1.1 referrer (--registry-referrers-mode=oci-1-1; distribution 2.8 has no
# Referrers API, so cosign writes the sha256-<hex> tag-fallback index).
# Writes NAME.referrers ("REPO REFERRER-DIGEST" lines, from the source).
import_sign() {
  local name=$1 refs=()
  mapfile -t refs < <(awk -v host="$IMPORT_DEV" '{ print host "/" $1 "@" $2 }' "$IMPORT_WORK/$name.set")
  import_cosign sign --yes --key "$IMPORT_KEY.key" --tlog-upload=false --allow-http-registry "${refs[@]}" \
    >"$IMPORT_WORK/sign.log" 2>&1 || reg_die "cosign sign failed: $(tail -n 5 "$IMPORT_WORK/sign.log")"
  COSIGN_EXPERIMENTAL=1 import_cosign sign --yes --key "$IMPORT_KEY.key" --tlog-upload=false --allow-http-registry \
    --registry-referrers-mode=oci-1-1 -a via=referrer "${refs[@]}" \
    >"$IMPORT_WORK/sign.log" 2>&1 || reg_die "cosign sign (oci-1-1) failed: $(tail -n 5 "$IMPORT_WORK/sign.log")"
  local repo digest index referrer
  while read -r repo digest; do
    index=$(curl -fsS -H "Accept: $REG_OCI_INDEX" "http://$IMPORT_DEV/v2/$repo/manifests/sha256-${digest#sha256:}") ||
      reg_die "no referrers tag-fallback index for $repo@$digest after cosign sign --registry-referrers-mode=oci-1-1"
    referrer=$(jq -r '.manifests[0].digest // empty' <<<"$index")
    [ -n "$referrer" ] || reg_die "the referrers index of $repo@$digest is empty: $index"
    printf '%s %s\n' "$repo" "$referrer"
  done <"$IMPORT_WORK/$name.set" >"$IMPORT_WORK/$name.referrers"
}

import_cosign() { HOME=$IMPORT_HOME COSIGN_PASSWORD=$IMPORT_PASSWORD cosign "$@" </dev/null; }

# --- the target -------------------------------------------------------------

# import_fresh_prod: bench-env replaces prod by a fresh, empty registry;
# sets IMPORT_PROD and IMPORT_PROD_PID (from hyperfine's --prepare too).
import_fresh_prod() {
  local -A HARNESS=()
  harness_restart prod
  IMPORT_PROD=${HARNESS[prod_host]}
  IMPORT_PROD_PID=${HARNESS[prod_pid]}
}

# --- the contenders ---------------------------------------------------------
# Each dies with the tool's own words if it fails: a benchmark of a tool
# that did not do the work would mean nothing. Nothing but the tool runs
# inside them (the client CPU column is every process they start).

import_os_import() { # RECORDS OUT ARGS...
  local records=$1 out=$2
  shift 2
  "$OS_IMPORT" "$@" <"$records" >"$out" 2>"$out.err" ||
    reg_die "os-import $* failed (exit $?): $(tail -n 5 "$out.err"); its error records:"$'\n'"$(jq -c 'select(.error) | .error' "$out" | head -n 3)"
}

SKOPEO_COPY=(skopeo --insecure-policy copy --quiet --all --preserve-digests --src-tls-verify=false --dest-tls-verify=false)

# (An array cannot be exported: hyperfine's bash gets it as SKOPEO_COPY_ARGS.)
import_skopeo_copy_args() {
  [ -n "${SKOPEO_COPY_ARGS:-}" ] || return 0
  read -r -a SKOPEO_COPY <<<"$SKOPEO_COPY_ARGS"
}
import_skopeo_seq() { # PAIRS LOG
  local src dst
  import_skopeo_copy_args
  : >"$2"
  while read -r src dst; do
    "${SKOPEO_COPY[@]}" "docker://$src" "docker://$dst" </dev/null >>"$2" 2>&1 ||
      reg_die "skopeo copy $src $dst failed: $(tail -n 5 "$2")"
  done <"$1"
}
import_skopeo_par() { # PAIRS LOG
  import_skopeo_copy_args
  sed 's|^\([^ ]*\) \([^ ]*\)$|docker://\1 docker://\2|' "$1" |
    xargs -P4 -L1 "${SKOPEO_COPY[@]}" >"$2" 2>&1 ||
    reg_die "skopeo copy (xargs -P4) failed: $(tail -n 5 "$2")"
}
import_cosign_copy() { # PAIRS LOG
  local src dst
  : >"$2"
  while read -r src dst; do
    import_cosign copy --allow-http-registry --force "$src" "$dst" >>"$2" 2>&1 ||
      reg_die "cosign copy $src $dst failed: $(tail -n 5 "$2")"
  done <"$1"
}
import_oras_cp() { # PAIRS LOG
  local src dst
  : >"$2"
  while read -r src dst; do
    HOME=$IMPORT_HOME oras cp -r --from-plain-http --to-plain-http "$src" "$dst" </dev/null >>"$2" 2>&1 ||
      reg_die "oras cp -r $src $dst failed: $(tail -n 5 "$2")"
  done <"$1"
}
import_skopeo_sync() { # YAML DEST LOG
  skopeo --insecure-policy sync --src yaml --dest docker --dest-tls-verify=false --all --preserve-digests \
    "$1" "$2" </dev/null >"$3" 2>&1 || reg_die "skopeo sync to $2 failed: $(tail -n 5 "$3")"
}

# import_pairs NAME HOST PREFIX: "DEV/REPO@DIGEST HOST/PREFIX/svcN:TAG" per
# image of the set: where os-import --to HOST/PREFIX puts it.
import_pairs() {
  awk -v dev="$IMPORT_DEV" -v to="$2/$3" -v tag="$IMPORT_TAG" \
    '{ n = split($1, p, "/"); print dev "/" $1 "@" $2, to "/" p[n] ":" tag }' "$IMPORT_WORK/$1.set"
}

# --- checks (outside the timers) ------------------------------------------

# import_check_images NAME HOST PREFIX WHAT: every image of the set is at
# HOST/PREFIX/svcN:TAG with the source's exact manifest bytes.
import_check_images() {
  local name=$1 host=$2 prefix=$3 what=$4 dir=$IMPORT_WORK/fetched repo digest i=0 args=()
  rm -rf -- "$dir"
  mkdir -p "$dir"
  while read -r repo digest; do
    i=$((i + 1))
    args+=(-o "$dir/$i" "http://$host/v2/$prefix/${repo##*/}/manifests/$IMPORT_TAG")
  done <"$IMPORT_WORK/$name.set"
  curl -sS -f -H "Accept: $REG_ACCEPT" "${args[@]}" 2>/dev/null || true
  i=0
  while read -r repo digest; do
    i=$((i + 1))
    local got=none
    [ -s "$dir/$i" ] && got=$(sha256sum <"$dir/$i") && got=sha256:${got%% *}
    [ "$got" = "$digest" ] ||
      reg_die "$what: $host/$prefix/${repo##*/}:$IMPORT_TAG is ${got} (manifest $(head -c 200 "$dir/$i" 2>/dev/null)), the source $repo is $digest"
  done <"$IMPORT_WORK/$name.set"
}

# import_carried NAME HOST PREFIX: "SIGS REFERRERS": how many images of the
# set have their cosign signature tag (the same manifest as at the source)
# and their OCI 1.1 referrer (listed in the sha256-<hex> tag-fallback index,
# and present) at HOST/PREFIX/svcN.
import_carried() {
  local name=$1 host=$2 prefix=$3 repo digest referrer sigs=0 nrefs=0 dir=$IMPORT_WORK/carried
  rm -rf -- "$dir"
  mkdir -p "$dir"
  while read -r repo digest; do
    local hex=${digest#sha256:} svc=${repo##*/} want got
    want=$(curl -sS -H "Accept: $REG_ACCEPT" "http://$IMPORT_DEV/v2/$repo/manifests/sha256-$hex.sig" | sha256sum)
    got=$(curl -sS -f -H "Accept: $REG_ACCEPT" "http://$host/v2/$prefix/$svc/manifests/sha256-$hex.sig" 2>/dev/null | sha256sum) || got=none
    [ "$got" = "$want" ] && sigs=$((sigs + 1))
    referrer=$(awk -v r="$repo" '$1 == r { print $2 }' "$IMPORT_WORK/$name.referrers")
    if curl -sS -f -H "Accept: $REG_OCI_INDEX" -o "$dir/index" "http://$host/v2/$prefix/$svc/manifests/sha256-$hex" 2>/dev/null &&
      jq -e --arg r "$referrer" '.mediaType == "application/vnd.oci.image.index.v1+json" and any(.manifests[]?; .digest == $r)' "$dir/index" >/dev/null 2>&1 &&
      [ "$(curl -s -o /dev/null -w '%{http_code}' -I -H "Accept: $REG_ACCEPT" "http://$host/v2/$prefix/$svc/manifests/$referrer")" = 200 ]; then
      nrefs=$((nrefs + 1))
    fi
  done <"$IMPORT_WORK/$name.set"
  printf '%s %s\n' "$sigs" "$nrefs"
}

# import_check_records FILE WHAT NAME: os-import's records: one per image,
# no error, the source digest, a last event `import`. Prints the sums of the
# event's counters: "BYTES COPIED MOUNTED SKIPPED MANIFESTS".
import_check_records() {
  local file=$1 what=$2 name=$3 problem
  problem=$(jq -rn --rawfile want "$IMPORT_WORK/$name.set" '
    [inputs] as $r
    | ($want | split("\n") | map(select(. != "") | split(" ")[1]) | sort) as $w
    | if ($r | length) != ($w | length) then "\($r | length) records instead of \($w | length)"
      else (first($r[] | select(.error) | "error \(.error.code): \(.error.message)") //
            first($r[] | select((.history[-1].step // "") != "import") | "a record whose last event is \(.history[-1].step // "none"), not import") //
            (if ([$r[].digest] | sort) != $w then "digests \([$r[].digest] | sort | .[0:2]) are not the source ones" else empty end))
      end' "$file") || problem="not JSON records: $(head -c 300 "$file")"
  [ -z "$problem" ] || reg_die "$what: $problem"
  jq -rn '[inputs | .history[-1]] | [map(.bytes), map(.blobsCopied), map(.blobsMounted), map(.blobsSkipped), map(.manifests)] | map(add) | @tsv' "$file"
}

# import_request_cost: the CPU (ms, 3 decimals) the prod registry spends on
# one request that touches no storage: 400 HEAD /v2/ over one kept-alive
# curl connection. What a no-op's requests cost, whoever sends them.
import_request_cost() {
  local args=() i before after
  for ((i = 0; i < 400; i++)); do args+=(-I -o /dev/null "http://$IMPORT_PROD/v2/"); done
  before=$(hf_cpu_us "$IMPORT_PROD_PID")
  curl -sS "${args[@]}" || reg_die "curl HEAD /v2/ against prod failed"
  after=$(hf_cpu_us "$IMPORT_PROD_PID")
  printf '%.3f' "$(((after - before) / 400))e-3"
}

# --- the runs, as hyperfine runs them -----------------------------------------
# A contender is NAME:TOOL (the set, the tool); run R of each promotes the
# set into a fresh prod under rR/TOOL (same: inside dev, under
# promoted/rR-TOOL; again: onto a fresh prod os-import filled in the
# --prepare, under rR/again). $IMPORT_WORK/run says which run is next or
# last: "KEY R HOST PREFIX".

IMPORT_KEYS=(small:os-import small:skopeo-seq small:skopeo-par small:cosign small:oras
  large:os-import large:skopeo-seq large:skopeo-par
  shared:os-import shared:skopeo-seq shared:skopeo-par
  same:os-import same:skopeo-seq
  again:os-import again:os-import-nosig again:skopeo-sync)

# import_run KEY: the timed part, nothing but the tool.
import_run() {
  local key r host prefix name tool out=$IMPORT_WORK/out
  read -r key r host prefix <"$IMPORT_WORK/run"
  [ "$key" = "$1" ] || reg_die "import_run $1: the --prepare set up $key"
  name=${key%%:*} tool=${key#*:}
  [ "$name" != same ] && [ "$name" != again ] || name=${name/same/shared} name=${name/again/small}
  case $tool in
    os-import) import_os_import "$IMPORT_WORK/$name.records" "$out" --to "$host/$prefix" ;;
    os-import-nosig) import_os_import "$IMPORT_WORK/$name.records" "$out" --no-signatures --to "$host/$prefix" ;;
    skopeo-seq) import_skopeo_seq "$IMPORT_WORK/pairs" "$out.log" ;;
    skopeo-par) import_skopeo_par "$IMPORT_WORK/pairs" "$out.log" ;;
    cosign) import_cosign_copy "$IMPORT_WORK/pairs" "$out.log" ;;
    oras) import_oras_cp "$IMPORT_WORK/pairs" "$out.log" ;;
    skopeo-sync) import_skopeo_sync "$IMPORT_WORK/sync.yaml" "$host/$prefix" "$out.log" ;;
  esac
}

# import_check KEY R HOST PREFIX: what that run did, checked (outside the
# timer); what the report shows of it into $IMPORT_WORK/note.KEY and
# carried.KEY (the last run's), os-import's stderr into stderr.lines.
import_check() {
  local key=$1 r=$2 host=$3 prefix=$4 name=${1%%:*} tool=${1#*:} out=$IMPORT_WORK/out set
  set=$name
  case $name in same) set=shared ;; again) set=small ;; esac
  case $tool in
    os-import | os-import-nosig)
      [ ! -s "$out.err" ] || printf '%s\n' "$key, run $r: $(head -n 2 "$out.err" | tr '\n' ' ')" >>"$IMPORT_WORK/stderr.lines"
      import_check_records "$out" "$key (run $r)" "$set" >"$IMPORT_WORK/note.$key" ;;
    skopeo-sync)
      printf '%s of %s skipped as already present\n' "$(grep -c 'already present at destination' "$out.log" || true)" \
        "$IMPORT_N_SMALL" >"$IMPORT_WORK/note.$key" ;;
  esac
  import_check_images "$set" "$host" "$prefix" "$key (run $r)"
  if [ "$name" = small ]; then
    local carried
    carried=$(import_carried small "$host" "$prefix")
    printf '%s\n' "$carried" >"$IMPORT_WORK/carried.$key"
    [ "$tool" != os-import ] || [ "$carried" = "$IMPORT_N_SMALL $IMPORT_N_SMALL" ] ||
      reg_die "os-import carried signatures/referrers for only ($carried) of $IMPORT_N_SMALL images (run $r)"
  fi
}

# import_next KEY: hyperfine's --prepare, before every run of KEY: closes
# the samples of the run before (whichever contender's) and checks it, on
# the registry it ran against; then sets up this one (a fresh prod; the
# pairs of references a peer copies; for again, prod filled by os-import)
# and opens the samples of the target registry (and for again, of dev).
import_next() {
  local key=$1 r=0 name=${1%%:*} tool=${1#*:} host prefix pid
  hf_cpu_close
  if [ -e "$IMPORT_WORK/run" ]; then
    local last=()
    read -r -a last <"$IMPORT_WORK/run"
    import_check "${last[@]}"
    rm -f -- "$IMPORT_WORK/run"
  fi
  [ ! -e "$IMPORT_WORK/$key.round" ] || read -r r <"$IMPORT_WORK/$key.round"
  r=$((r + 1))
  printf '%s\n' "$r" >"$IMPORT_WORK/$key.round"
  if [ "$name" = same ]; then
    host=$IMPORT_DEV prefix=promoted/r$r-$tool pid=$IMPORT_DEV_PID
    [ "$tool" = os-import ] || import_pairs shared "$host" "$prefix" >"$IMPORT_WORK/pairs"
  else
    import_fresh_prod
    host=$IMPORT_PROD prefix=r$r/$tool pid=$IMPORT_PROD_PID
    case $name:$tool in
      again:*)
        prefix=r$r/again
        import_os_import "$IMPORT_WORK/small.records" "$IMPORT_WORK/fill" --to "$host/$prefix"
        import_check_records "$IMPORT_WORK/fill" "os-import filling prod for $key (run $r)" small >/dev/null
        import_check_images small "$host" "$prefix" "os-import filling prod for $key (run $r)"
        if [ "$tool" = skopeo-sync ]; then
          local repo
          {
            printf '%s:\n  tls-verify: false\n  images:\n' "$IMPORT_DEV"
            while read -r repo _; do printf '    %s: ["%s"]\n' "$repo" "$IMPORT_TAG"; done <"$IMPORT_WORK/small.set"
          } >"$IMPORT_WORK/sync.yaml"
        fi ;;
      *:os-import) ;;
      *) import_pairs "$name" "$host" "$prefix" >"$IMPORT_WORK/pairs" ;;
    esac
  fi
  printf '%s %s %s %s\n' "$key" "$r" "$host" "$prefix" >"$IMPORT_WORK/run"
  hf_cpu_open "$key" "$pid"
  [ "$name" != again ] || hf_cpu_open "source:$key" "$IMPORT_DEV_PID"
}

# --- report -----------------------------------------------------------------

IMPORT_STDERR=() # what os-import said on stderr (quiet when it is not a terminal)

# MiB with one decimal.
mib() { printf '%.1f' "$(jq -n --argjson b "$1" --argjson m "$MIB" '$b / $m')"; }
ratio() { if [ "$2" = - ] || jq -en "$2 <= 0" >/dev/null; then printf -- -; else hf_ratio "$1" "$2" %.2fx; fi; }

# import_table BASE-KEY ROW...: ROW is "KEY|LABEL"; prints medians of wall
# time, the client's CPU (hyperfine's mean), the target registry's CPU and
# what it wrote.
import_table() {
  local base=$1 row key label median base_ms wrote
  shift
  base_ms=$(hf_stat "$IMPORT_JSON" "$base" median)
  printf '  %-46s %9s %8s %8s %8s %10s %10s %9s\n' contender "median ms" "min ms" "max ms" "vs os-i." "client cpu" "target cpu" "wrote MiB"
  for row in "$@"; do
    IFS='|' read -r key label <<<"$row"
    median=$(hf_stat "$IMPORT_JSON" "$key" median)
    wrote=$(hf_sample "$key" 3)
    [ "$wrote" = - ] || wrote=$(mib "$wrote")
    printf '  %-46s %9s %8s %8s %8s %10s %10s %9s\n' "$label" "$median" \
      "$(hf_stat "$IMPORT_JSON" "$key" min)" "$(hf_stat "$IMPORT_JSON" "$key" max)" \
      "$(ratio "$median" "$base_ms")" "$(hf_client_cpu "$IMPORT_JSON" "$key")" "$(hf_cpu_median "$key")" "$wrote"
  done
}

# "bytes B (M MiB), copied C, mounted M, skipped S, manifests N" from counters.
import_counters() {
  local bytes copied mounted skipped manifests
  read -r bytes copied mounted skipped manifests <<<"$1"
  printf 'sent %s MiB, blobs copied %s, mounted %s, skipped %s, manifests written %s' \
    "$(mib "$bytes")" "$copied" "$mounted" "$skipped" "$manifests"
}

# /usr/bin/time -v's value for FIELD in FILE.
time_field() { awk -F': ' -v f="$2" 'index($0, f) { v = $2 } END { print v }' "$1"; }

IMPORT_N_SMALL=20
bench_import() {
  local runs=${RUNS:-3}
  OS_IMPORT=$BIN/os-import
  [ -x "$OS_IMPORT" ] || reg_die "$OS_IMPORT was not built"
  local tool
  for tool in skopeo cosign oras; do
    command -v "$tool" >/dev/null || reg_die "$tool is not installed (run scripts/setup)"
  done
  [ -x /usr/bin/time ] || reg_die "/usr/bin/time is not installed (run scripts/setup)"
  local load
  read -r load _ </proc/loadavg || load=unknown
  local started=${EPOCHREALTIME//[!0-9]/}

  # Blobs and work files next to the registries (tmpfs unless --registry-disk).
  local storage work=""
  reg_mktemp work "${REG_STORAGE_TMPDIR:-}"
  IMPORT_WORK=$work
  say "import: starting the registries (dev, prod), pushing the images to dev (once)"
  HARNESS_CONTROL=$work/control
  harness_start dev prod
  IMPORT_DEV=${HARNESS[dev_host]} IMPORT_DEV_PID=${HARNESS[dev_pid]}
  storage="${HARNESS[dev_dir]%/*} ($(stat -f -c %T "${HARNESS[dev_dir]}"))"
  IMPORT_HOME=$work/home # cosign's and oras' HOME: offline, no ~/.sigstore, no ~/.docker
  mkdir -p "$IMPORT_HOME"
  IMPORT_KEY=$work/cosign
  (cd "$work" && COSIGN_PASSWORD=$IMPORT_PASSWORD HOME=$IMPORT_HOME cosign generate-key-pair --output-key-prefix cosign) \
    >"$work/keygen.log" 2>&1 || reg_die "cosign generate-key-pair failed: $(tail -n 5 "$work/keygen.log")"

  import_set small "$IMPORT_N_SMALL" "small-@-1:$((8 * MIB))" "small-@-2:$((8 * MIB))" "small-@-3:$((8 * MIB))"
  import_set large 5 "large-@-1:$((64 * MIB))" "large-@-2:$((64 * MIB))"
  import_set shared 20 "base-1:$((16 * MIB))" "base-2:$((16 * MIB))" "shared-@:$((4 * MIB))"
  import_set huge 1 "huge-1:$((1024 * MIB))"
  say "import: signing the $IMPORT_N_SMALL images of the small set (cosign .sig and an OCI 1.1 referrer)"
  import_sign small
  say "import: set-up took $(us_ms $((${EPOCHREALTIME//[!0-9]/} - started))) ms"

  # Warm-up (page cache, binaries): each client once on one image.
  head -n 1 "$work/small.records" >"$work/warm.records"
  import_fresh_prod
  import_os_import "$work/warm.records" "$work/warm.out" --to "$IMPORT_PROD/warm/os"
  import_pairs small "$IMPORT_PROD" warm/skopeo | head -n 1 >"$work/pairs"
  import_skopeo_seq "$work/pairs" "$work/warm.log"
  import_pairs small "$IMPORT_PROD" warm/cosign | head -n 1 >"$work/pairs"
  import_cosign_copy "$work/pairs" "$work/warm.log"
  import_pairs small "$IMPORT_PROD" warm/oras | head -n 1 >"$work/pairs"
  import_oras_cp "$work/pairs" "$work/warm.log"

  say "import: $runs run$([ "$runs" -eq 1 ] || echo s) of each of ${#IMPORT_KEYS[@]} contenders, each on a fresh prod (made in hyperfine's --prepare)"
  export BIN OS_IMPORT IMPORT_WORK IMPORT_DEV IMPORT_DEV_PID IMPORT_HOME IMPORT_KEY IMPORT_PASSWORD IMPORT_TAG \
    IMPORT_N_SMALL HARNESS_CONTROL REG_ACCEPT REG_OCI_INDEX REG_PROG
  export -f import_run import_check import_next import_fresh_prod harness_restart import_os_import \
    import_skopeo_copy_args import_skopeo_seq import_skopeo_par import_cosign_copy import_oras_cp import_skopeo_sync import_cosign \
    import_pairs import_check_images import_carried import_check_records hf_cpu_us hf_wchar hf_cpu_open \
    hf_cpu_close reg_die
  export SKOPEO_COPY_ARGS="${SKOPEO_COPY[*]}"
  IMPORT_JSON=$work/import.json
  local key contenders=()
  for key in "${IMPORT_KEYS[@]}"; do
    contenders+=(--prepare "import_next $key" -n "$key" "import_run $key")
  done
  hf_run "$IMPORT_JSON" --runs "$runs" "${contenders[@]}"
  hf_cpu_close
  # The last run, which no --prepare came after.
  local last=()
  read -r -a last <"$work/run"
  import_check "${last[@]}"
  rm -f -- "$work/run"
  [ ! -s "$work/stderr.lines" ] || mapfile -t IMPORT_STDERR <"$work/stderr.lines"

  # Memory: one image, one 1 GiB layer, once each, under /usr/bin/time -v.
  say "import: 1 GiB layer, os-import then skopeo, under /usr/bin/time -v"
  import_fresh_prod
  IMPORT_REQUEST_COST=$(import_request_cost)
  /usr/bin/time -v -o "$work/huge.os.time" "$OS_IMPORT" --to "$IMPORT_PROD/huge" \
    <"$work/huge.records" >"$work/huge.os-import" 2>"$work/huge.os-import.err" ||
    reg_die "os-import of the 1 GiB image failed: $(tail -n 5 "$work/huge.os-import.err")"
  local huge_counters
  huge_counters=$(import_check_records "$work/huge.os-import" "os-import (1 GiB layer)" huge)
  import_check_images huge "$IMPORT_PROD" huge "os-import (1 GiB layer)"
  import_fresh_prod
  import_pairs huge "$IMPORT_PROD" huge >"$work/pairs"
  local src dst
  read -r src dst <"$work/pairs"
  /usr/bin/time -v -o "$work/huge.skopeo.time" "${SKOPEO_COPY[@]}" "docker://$src" "docker://$dst" \
    >"$work/huge.skopeo.log" 2>&1 || reg_die "skopeo copy of the 1 GiB image failed: $(tail -n 5 "$work/huge.skopeo.log")"
  import_check_images huge "$IMPORT_PROD" huge "skopeo (1 GiB layer)"
  harness_stop

  # What the report shows of the last runs (written by import_check).
  local -A note=() carried=()
  for key in "${IMPORT_KEYS[@]}"; do
    [ ! -e "$work/note.$key" ] || note[$key]=$(<"$work/note.$key")
    [ ! -e "$work/carried.$key" ] || carried[$key]=$(<"$work/carried.$key")
  done

  # --- report ---
  local cosign_version skopeo_version oras_version
  cosign_version=$(dpkg-query -W -f '${Version}' cosign 2>/dev/null) || cosign_version=unknown
  skopeo_version=$(skopeo --version | awk '{ print $NF }')
  oras_version=$(oras version 2>/dev/null | awk '$1 == "Version:" { print $2 }')
  echo
  echo "import: dev -> prod on two docker-registry instances on loopback; every contender of every round gets a fresh prod registry; $runs round$([ "$runs" -eq 1 ] || echo s), median wall time"
  echo "  $("$OS_IMPORT" --version) (one process, the set's records from os-digest on stdin, --jobs 8, the default); skopeo $skopeo_version (copy --all --preserve-digests); cosign $cosign_version (copy, per image); oras $oras_version (cp -r, per image)"
  echo "  $(docker-registry --version | awk '{ print "docker-registry", $NF }'); $(hyperfine --version); nproc $(nproc); load average $load at the start"
  echo "  registry storage: $storage"
  echo "  client cpu: user + system of the contender's processes (hyperfine's mean over the rounds); target cpu: of the prod registry meanwhile (median, /proc/PID/stat); wrote: bytes the prod registry wrote meanwhile (its storage and sockets, from /proc/PID/io) -- about what it was sent"
  echo
  local small_mib large_mib
  small_mib=$(mib "${IMPORT_BYTES[small]}")
  large_mib=$(mib "${IMPORT_BYTES[large]}")
  echo "small: $IMPORT_N_SMALL images x 3 layers x 8 MiB ($small_mib MiB), each signed by cosign (.sig) and with an OCI 1.1 referrer (tag fallback)"
  import_table small:os-import \
    "small:os-import|os-import, 1 process, $IMPORT_N_SMALL records" \
    "small:skopeo-seq|skopeo copy x$IMPORT_N_SMALL, sequential" \
    "small:skopeo-par|skopeo copy x$IMPORT_N_SMALL, 4 in parallel" \
    "small:cosign|cosign copy x$IMPORT_N_SMALL, sequential" \
    "small:oras|oras cp -r x$IMPORT_N_SMALL, sequential"
  local sigs refs
  echo "  carried at the target (last round; of $IMPORT_N_SMALL images): cosign signature tag / OCI 1.1 referrer"
  for key in os-import skopeo-seq skopeo-par cosign oras; do
    read -r sigs refs <<<"${carried[small:$key]}"
    printf '    %-12s %2s / %2s\n' "$key" "$sigs" "$refs"
  done
  echo "  os-import's events (last round): $(import_counters "${note[small:os-import]}")"
  echo
  echo "large: 5 images x 2 layers x 64 MiB ($large_mib MiB)"
  import_table large:os-import \
    "large:os-import|os-import, 1 process, 5 records" \
    "large:skopeo-seq|skopeo copy x5, sequential" \
    "large:skopeo-par|skopeo copy x5, 4 in parallel"
  echo "  os-import's events (last round): $(import_counters "${note[large:os-import]}")"
  echo
  echo "shared: 20 services (bench/shared/svc1..20, different repositories of dev) sharing 2 base layers of 16 MiB, each with its own 4 MiB layer: $(mib "${IMPORT_UNIQUE[shared]}") MiB distinct, $(mib "${IMPORT_BYTES[shared]}") MiB if every image is sent whole"
  import_table shared:os-import \
    "shared:os-import|os-import, dev -> prod" \
    "shared:skopeo-seq|skopeo copy x20, sequential, dev -> prod" \
    "shared:skopeo-par|skopeo copy x20, 4 in parallel, dev -> prod"
  echo "  os-import's events, dev -> prod (last round): $(import_counters "${note[shared:os-import]}")"
  echo "  same registry (dev/bench/shared/svcN -> dev/promoted/...; target cpu and wrote are dev's):"
  import_table same:os-import \
    "same:os-import|os-import, dev -> dev" \
    "same:skopeo-seq|skopeo copy x20, sequential, dev -> dev"
  echo "  os-import's events, dev -> dev (last round): $(import_counters "${note[same:os-import]}")"
  echo
  echo "re-promotion: the small set again, onto a fresh prod os-import just filled"
  import_table again:os-import \
    "again:os-import|os-import, 1 process, $IMPORT_N_SMALL records" \
    "again:os-import-nosig|os-import --no-signatures (image only)" \
    "again:skopeo-sync|skopeo sync (yaml, $IMPORT_N_SMALL repos, image only)"
  echo "  os-import's events (last round): $(import_counters "${note[again:os-import]}"); skopeo sync: ${note[again:skopeo-sync]}"
  echo "  the source registry (dev) meanwhile, median cpu ms: os-import $(hf_cpu_median source:again:os-import), --no-signatures $(hf_cpu_median source:again:os-import-nosig), skopeo sync $(hf_cpu_median source:again:skopeo-sync)"
  echo "  one request costs this registry $IMPORT_REQUEST_COST ms of CPU even when it touches no storage (400 HEAD /v2/, one kept-alive curl connection): a signed no-op asks three tags per image at the target (the image's, its .sig, its referrers' fallback index) and two at the source, an image-only one (os-import --no-signatures, skopeo sync) one"
  echo
  local os_rss sk_rss os_cpu sk_cpu os_wall sk_wall
  os_rss=$(time_field "$work/huge.os.time" "Maximum resident set size")
  sk_rss=$(time_field "$work/huge.skopeo.time" "Maximum resident set size")
  os_cpu=$(jq -n "$(time_field "$work/huge.os.time" "User time") + $(time_field "$work/huge.os.time" "System time")")
  sk_cpu=$(jq -n "$(time_field "$work/huge.skopeo.time" "User time") + $(time_field "$work/huge.skopeo.time" "System time")")
  os_wall=$(time_field "$work/huge.os.time" "Elapsed (wall clock)")
  sk_wall=$(time_field "$work/huge.skopeo.time" "Elapsed (wall clock)")
  echo "memory: one image with one 1 GiB layer, once, /usr/bin/time -v"
  printf '  %-46s %14s %10s %10s\n' contender "max RSS (MiB)" "cpu s" "wall"
  printf '  %-46s %14.1f %10.2f %10s\n' "os-import" "$(jq -n "$os_rss / 1024")" "$os_cpu" "$os_wall"
  printf '  %-46s %14.1f %10.2f %10s\n' "skopeo copy" "$(jq -n "$sk_rss / 1024")" "$sk_cpu" "$sk_wall"
  echo "  os-import's event: $(import_counters "$huge_counters")"

  # --- targets ---
  local os seq par cos oras os_l seq_l par_l again sync again_nosig os_c seq_c os_c_l seq_c_l
  os=$(hf_stat "$IMPORT_JSON" small:os-import median)
  seq=$(hf_stat "$IMPORT_JSON" small:skopeo-seq median)
  par=$(hf_stat "$IMPORT_JSON" small:skopeo-par median)
  cos=$(hf_stat "$IMPORT_JSON" small:cosign median)
  oras=$(hf_stat "$IMPORT_JSON" small:oras median)
  os_l=$(hf_stat "$IMPORT_JSON" large:os-import median)
  seq_l=$(hf_stat "$IMPORT_JSON" large:skopeo-seq median)
  par_l=$(hf_stat "$IMPORT_JSON" large:skopeo-par median)
  again=$(hf_stat "$IMPORT_JSON" again:os-import median)
  sync=$(hf_stat "$IMPORT_JSON" again:skopeo-sync median)
  again_nosig=$(hf_stat "$IMPORT_JSON" again:os-import-nosig median)
  os_c=$(hf_client_cpu "$IMPORT_JSON" small:os-import)
  seq_c=$(hf_client_cpu "$IMPORT_JSON" small:skopeo-seq)
  os_c_l=$(hf_client_cpu "$IMPORT_JSON" large:os-import)
  seq_c_l=$(hf_client_cpu "$IMPORT_JSON" large:skopeo-seq)
  local os_shared skopeo_shared unique_shared=${IMPORT_UNIQUE[shared]}
  os_shared=$(hf_sample shared:os-import 3)
  skopeo_shared=$(hf_sample shared:skopeo-seq 3)
  local same_copied same_mounted again_bytes again_copied
  read -r _ same_copied same_mounted _ _ <<<"${note[same:os-import]}"
  read -r again_bytes again_copied _ _ _ <<<"${note[again:os-import]}"
  echo
  echo "targets:"
  hf_target "small: os-import at least 1.4x faster than sequential skopeo ($(ratio "$seq" "$os"))" "$seq" "$os" 'a >= 1.4 * b'
  hf_target "small: os-import faster than 4-parallel skopeo ($(ratio "$par" "$os"))" "$par" "$os" 'a > b'
  hf_target "large: os-import at least 1.4x faster than sequential skopeo ($(ratio "$seq_l" "$os_l"))" "$seq_l" "$os_l" 'a >= 1.4 * b'
  hf_target "large: os-import faster than 4-parallel skopeo ($(ratio "$par_l" "$os_l"))" "$par_l" "$os_l" 'a > b'
  hf_target "signed: os-import faster than cosign copy ($(ratio "$cos" "$os"))" "$cos" "$os" 'a > b'
  hf_target "signed: os-import faster than oras cp -r ($(ratio "$oras" "$os"))" "$oras" "$os" 'a > b'
  local cs cr osig oref
  read -r sigs refs <<<"${carried[small:os-import]}"
  read -r cs cr <<<"${carried[small:cosign]}"
  read -r osig oref <<<"${carried[small:oras]}"
  hf_target "signed: os-import carries what cosign copy and oras cp -r carry together (signatures $sigs/$IMPORT_N_SMALL, referrers $refs/$IMPORT_N_SMALL; cosign copy $cs/$cr, oras $osig/$oref)" \
    "$((sigs + refs))" "$((2 * IMPORT_N_SMALL))" 'a == b'
  hf_target "small: os-import's client CPU at most 1/3 of sequential skopeo's ($os_c ms vs $seq_c ms: $(ratio "$os_c" "$seq_c"); large: $os_c_l vs $seq_c_l ms, $(ratio "$os_c_l" "$seq_c_l"))" \
    "$os_c" "$seq_c" 'a * 3 <= b'
  hf_target "shared: the shared base layers sent once, dev -> prod (prod wrote $(mib "$os_shared") MiB for os-import, $(mib "$skopeo_shared") MiB for sequential skopeo; $(mib "$unique_shared") MiB distinct)" \
    "$os_shared" "$unique_shared" 'a <= 1.1 * b'
  hf_target "shared: same-registry promotion mounts every blob (os-import: $same_mounted mounted, $same_copied copied)" \
    "$same_copied" "$same_mounted" 'a == 0 and b > 0'
  hf_target "re-promotion: os-import at least 20x faster than its first promotion ($(ratio "$os" "$again"); sent $again_bytes bytes, $again_copied blobs)" \
    "$os" "$again" 'a >= 20 * b'
  hf_target "re-promotion: os-import --no-signatures at least 3x faster than the skopeo sync no-op, the same no-op: both check only the image ($(ratio "$sync" "$again_nosig"); with signatures and referrers also checked at both ends, $(ratio "$sync" "$again"))" \
    "$sync" "$again_nosig" 'a >= 3 * b'
  hf_target "memory: os-import's peak RSS under 32 MiB with a 1 GiB layer ($(printf '%.1f' "$(jq -n "$os_rss / 1024")") MiB; skopeo $(printf '%.1f' "$(jq -n "$sk_rss / 1024")") MiB)" \
    "$os_rss" 32768 'a < b'
  if [ "${#IMPORT_STDERR[@]}" -gt 0 ]; then
    echo "os-import wrote on stderr (not a terminal; it should be quiet):"
    printf '  %s\n' "${IMPORT_STDERR[@]}"
  fi
  echo "checked: every contender's target holds every image's exact manifest bytes (sha256 of the bytes at prod = the source digest); os-import's records carry an import event and no error, and its targets every signature and referrer"
  say "import: took $(us_ms $((${EPOCHREALTIME//[!0-9]/} - started))) ms"
}
