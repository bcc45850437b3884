# shellcheck shell=bash
# The `import` benchmark of scripts/bench (sourced by it, after its timing
# helpers and the release build): os-import against skopeo copy (sequential
# and 4 in parallel), cosign copy, oras cp -r and skopeo sync, on two
# throwaway registries (dev, the source, started once; prod, the target,
# started fresh for every contender of every round, so none finds another's
# blobs and skopeo's blob-info cache can mount nothing from a peer's
# repositories).
#
# Uses from scripts/bench: say, bench_measure, bench_stats, median_ms,
# fmt_ms, bench_target, registry_storage, RUNS, BIN, OS_DIGEST; from
# scripts/lib/registry.sh: reg_*.
#
# Variables set here are read across functions:
# shellcheck disable=SC2034

IMPORT_TAG=1.0.0
IMPORT_PASSWORD=bench-import-password
MIB=$((1024 * 1024))

# --- the images -------------------------------------------------------------

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

# Blobs pushed so far, by "SEED:SIZE": "DIGEST SIZE REPO" (a later image
# with the same layer mounts it from REPO instead of making it again).
declare -gA IMPORT_BLOBS=()

# import_push_image HOST REPO LAYER...: pushes a single-platform OCI image
# with the given layers (each SEED:SIZE) to HOST/REPO:IMPORT_TAG; prints its
# manifest digest. The config names REPO, so every image is different.
import_push_image() {
  local host=$1 repo=$2
  shift 2
  local layer seed size digest from file layers=() diff_ids=()
  for layer in "$@"; do
    seed=${layer%%:*} size=${layer#*:}
    if [ -n "${IMPORT_BLOBS[$layer]:-}" ]; then
      read -r digest _ from <<<"${IMPORT_BLOBS[$layer]}"
      import_push_blob "$host" "$repo" "$digest" /dev/null "$from"
    else
      file=$IMPORT_WORK/blob
      digest=$(import_blob "$seed" "$size" "$file")
      import_push_blob "$host" "$repo" "$digest" "$file"
      rm -f -- "$file"
      IMPORT_BLOBS[$layer]="$digest $size $repo"
    fi
    layers+=("$(printf '{"mediaType":"%s","digest":"%s","size":%s}' "$REG_OCI_LAYER" "$digest" "$size")")
    diff_ids+=("\"$digest\"")
  done
  local config=$IMPORT_WORK/config.json manifest=$IMPORT_WORK/manifest.json cfg cfgsize joined
  joined=$(IFS=,; printf '%s' "${diff_ids[*]}")
  printf '{"architecture":"amd64","os":"linux","config":{"Labels":{"dev.onestream.bench":"%s"}},"rootfs":{"type":"layers","diff_ids":[%s]}}' \
    "$repo" "$joined" >"$config"
  cfg=$(sha256sum <"$config") cfg=sha256:${cfg%% *}
  cfgsize=$(stat -c %s "$config")
  import_push_blob "$host" "$repo" "$cfg" "$config"
  joined=$(IFS=,; printf '%s' "${layers[*]}")
  printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"%s","digest":"%s","size":%s},"layers":[%s]}' \
    "$REG_OCI_MANIFEST" "$REG_OCI_CONFIG" "$cfg" "$cfgsize" "$joined" >"$manifest"
  digest=$(sha256sum <"$manifest") digest=sha256:${digest%% *}
  local answer
  answer=$(curl -sS -X PUT -H "Content-Type: $REG_OCI_MANIFEST" -T "$manifest" -o /dev/null \
    -w '%{http_code} %header{docker-content-digest}' "http://$host/v2/$repo/manifests/$IMPORT_TAG")
  [ "$answer" = "201 $digest" ] || reg_die "pushing $host/$repo:$IMPORT_TAG answered '$answer', expected '201 $digest'"
  printf '%s\n' "$digest"
}

# import_set NAME COUNT LAYER...: pushes COUNT images to dev as
# bench/NAME/svc1..COUNT, each with the layers given (SEED:SIZE; "@" in a
# seed becomes the image's number, so "x-@-1:8" is per image and "base:8"
# is shared by all). Writes $IMPORT_WORK/NAME.set ("REPO DIGEST" lines),
# NAME.records (os-digest's records, checked against the pushed digests)
# and sets IMPORT_BYTES[NAME] (the bytes of all images' layers) and
# IMPORT_UNIQUE[NAME] (of the distinct ones).
declare -gA IMPORT_BYTES=() IMPORT_UNIQUE=()
import_set() {
  local name=$1 count=$2 i layer spec total=0 unique=0 repo digest
  shift 2
  local set=$IMPORT_WORK/$name.set
  declare -A seen=()
  : >"$set"
  for ((i = 1; i <= count; i++)); do
    local specs=()
    for layer in "$@"; do
      spec=${layer//@/$i}
      specs+=("$spec")
      total=$((total + ${spec#*:}))
      if [ -z "${seen[$spec]:-}" ]; then
        seen[$spec]=1
        unique=$((unique + ${spec#*:}))
      fi
    done
    repo=bench/$name/svc$i
    digest=$(import_push_image "$IMPORT_DEV" "$repo" "${specs[@]}")
    printf '%s %s\n' "$repo" "$digest" >>"$set"
  done
  IMPORT_BYTES[$name]=$total
  IMPORT_UNIQUE[$name]=$unique
  awk -v host="$IMPORT_DEV" -v tag="$IMPORT_TAG" '{ print host "/" $1 ":" tag }' "$set" |
    "$OS_DIGEST" >"$IMPORT_WORK/$name.records" 2>"$IMPORT_WORK/$name.digest-err" ||
    reg_die "os-digest on the $name set failed: $(tail -n 3 "$IMPORT_WORK/$name.digest-err")"
  jq -r '.digest' "$IMPORT_WORK/$name.records" | cmp -s - <(awk '{ print $2 }' "$set") ||
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

# import_target: a fresh prod registry; sets IMPORT_PROD, IMPORT_PROD_PID.
import_target() {
  reg_start prod
  IMPORT_PROD=${REG_HOST[prod]}
  IMPORT_PROD_PID=${REG_PID[prod]}
  IMPORT_PROD_DIR=${REG_DIR[prod]}
  import_wchar IMPORT_PROD_W0 "$IMPORT_PROD_PID"
}

# import_wchar VAR PID: bytes PID has written so far (its storage and its
# sockets; for a registry receiving blobs, about the bytes it was sent).
import_wchar() {
  local -n _wchar=$1
  _wchar=$(awk '$1 == "wchar:" { print $2 }' "/proc/$2/io" 2>/dev/null)
  [ -n "$_wchar" ] || _wchar=0
}

# import_target_done KEY: records what prod wrote for contender KEY, then
# stops prod and drops its storage (tmpfs is memory).
declare -gA IMPORT_WROTE=() IMPORT_NOTE=()
import_target_done() {
  local w1
  import_wchar w1 "$IMPORT_PROD_PID"
  IMPORT_WROTE[$1]+="$((w1 - IMPORT_PROD_W0)) "
  reg_stop prod
  rm -rf -- "$IMPORT_PROD_DIR"
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

import_skopeo_seq() { # PAIRS LOG
  local src dst
  : >"$2"
  while read -r src dst; do
    "${SKOPEO_COPY[@]}" "docker://$src" "docker://$dst" </dev/null >>"$2" 2>&1 ||
      reg_die "skopeo copy $src $dst failed: $(tail -n 5 "$2")"
  done <"$1"
}
import_skopeo_par() { # PAIRS LOG
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

# import_with_source_cpu KEY CMD...: runs CMD; appends the source registry's
# (dev's) CPU time meanwhile (µs) to IMPORT_SOURCE_CPU[KEY]. A no-op asks
# both ends, so the target's CPU alone does not say what it cost.
declare -gA IMPORT_SOURCE_CPU=()
import_with_source_cpu() {
  local key=$1 before after
  shift
  process_cpu_us before "${REG_PID[dev]}"
  "$@"
  process_cpu_us after "${REG_PID[dev]}"
  IMPORT_SOURCE_CPU[$key]+="$((after - before)) "
}

# import_request_cost: the CPU (ms, 3 decimals) the prod registry spends on
# one request that touches no storage: 400 HEAD /v2/ over one kept-alive
# curl connection. What a no-op's requests cost, whoever sends them.
import_request_cost() {
  local args=() i before after
  for ((i = 0; i < 400; i++)); do args+=(-I -o /dev/null "http://$IMPORT_PROD/v2/"); done
  process_cpu_us before "$IMPORT_PROD_PID"
  curl -sS "${args[@]}" || reg_die "curl HEAD /v2/ against prod failed"
  process_cpu_us after "$IMPORT_PROD_PID"
  awk -v us="$((after - before))" 'BEGIN { printf "%.3f", us / 400 / 1000 }'
}

# --- one contender, one round ---------------------------------------------

# import_round_os NAME ROUND: os-import into a fresh prod (--to prod/PREFIX,
# one stream of the set's records); checks; for the signed set, also the
# re-promotion (os-import again, then skopeo sync of the same set) on that
# full target.
import_round_os() {
  local name=$1 round=$2 prefix=r$2/os-import out=$IMPORT_WORK/$1.os-import
  import_target
  bench_measure "$name:os-import" "$IMPORT_PROD_PID" "$IMPORT_SCRATCH" \
    import_os_import "$IMPORT_WORK/$name.records" "$out" --to "$IMPORT_PROD/$prefix"
  [ ! -s "$out.err" ] || IMPORT_STDERR+=("$name set, round $round: $(head -n 2 "$out.err" | tr '\n' ' ')")
  local counters
  counters=$(import_check_records "$out" "os-import ($name set)" "$name")
  IMPORT_NOTE[$name:os-import]=$counters
  import_check_images "$name" "$IMPORT_PROD" "$prefix" "os-import ($name set)"
  if [ "$name" = small ]; then
    local carried
    carried=$(import_carried "$name" "$IMPORT_PROD" "$prefix")
    IMPORT_CARRIED[$name:os-import]=$carried
    [ "$carried" = "$IMPORT_N_SMALL $IMPORT_N_SMALL" ] ||
      reg_die "os-import carried signatures/referrers for only ($carried) of $IMPORT_N_SMALL images"
    # Re-promotion: everything is there.
    local w0 w1
    import_wchar w0 "$IMPORT_PROD_PID"
    import_with_source_cpu again:os-import bench_measure "again:os-import" "$IMPORT_PROD_PID" "$IMPORT_SCRATCH" \
      import_os_import "$IMPORT_WORK/$name.records" "$out.again" --to "$IMPORT_PROD/$prefix"
    import_wchar w1 "$IMPORT_PROD_PID"
    IMPORT_WROTE[again:os-import]+="$((w1 - w0)) "
    IMPORT_NOTE[again:os-import]=$(import_check_records "$out.again" "os-import again ($name set)" "$name")
    # The same without the attachments, to tell what they cost a no-op.
    import_wchar w0 "$IMPORT_PROD_PID"
    import_with_source_cpu again:os-import-nosig bench_measure "again:os-import-nosig" "$IMPORT_PROD_PID" "$IMPORT_SCRATCH" \
      import_os_import "$IMPORT_WORK/$name.records" "$out.again-nosig" --no-signatures --to "$IMPORT_PROD/$prefix"
    import_wchar w1 "$IMPORT_PROD_PID"
    IMPORT_WROTE[again:os-import-nosig]+="$((w1 - w0)) "
    IMPORT_NOTE[again:os-import-nosig]=$(import_check_records "$out.again-nosig" "os-import --no-signatures again ($name set)" "$name")
    awk -v dev="$IMPORT_DEV" -v tag="$IMPORT_TAG" '
      BEGIN { print dev ":"; print "  tls-verify: false"; print "  images:" }
      { print "    " $1 ": [\"" tag "\"]" }' "$IMPORT_WORK/$name.set" >"$IMPORT_WORK/sync.yaml"
    import_wchar w0 "$IMPORT_PROD_PID"
    import_with_source_cpu again:skopeo-sync bench_measure "again:skopeo-sync" "$IMPORT_PROD_PID" "$IMPORT_SCRATCH" \
      import_skopeo_sync "$IMPORT_WORK/sync.yaml" "$IMPORT_PROD/$prefix" "$IMPORT_WORK/sync.log"
    import_wchar w1 "$IMPORT_PROD_PID"
    IMPORT_WROTE[again:skopeo-sync]+="$((w1 - w0)) "
    local synced
    synced=$(grep -c 'already present at destination' "$IMPORT_WORK/sync.log" || true)
    IMPORT_NOTE[again:skopeo-sync]="$synced of $IMPORT_N_SMALL skipped as already present"
    import_check_images "$name" "$IMPORT_PROD" "$prefix" "os-import, then skopeo sync ($name set)"
  fi
  import_target_done "$name:os-import"
}

# import_round_peer NAME KEY FUNCTION ROUND: one peer into a fresh prod.
import_round_peer() {
  local name=$1 key=$2 fn=$3 round=$4 prefix=r$4/$2
  import_target
  import_pairs "$name" "$IMPORT_PROD" "$prefix" >"$IMPORT_WORK/pairs"
  bench_measure "$name:$key" "$IMPORT_PROD_PID" "$IMPORT_SCRATCH" \
    "$fn" "$IMPORT_WORK/pairs" "$IMPORT_WORK/$name.$key.log"
  import_check_images "$name" "$IMPORT_PROD" "$prefix" "$key ($name set)"
  if [ "$name" = small ]; then
    IMPORT_CARRIED[$name:$key]=$(import_carried "$name" "$IMPORT_PROD" "$prefix")
  fi
  import_target_done "$name:$key"
}

# import_round_same KEY ROUND: the shared set promoted inside dev (other
# repositories, same registry): every blob can be mounted.
import_round_same() {
  local key=$1 round=$2 prefix=promoted/r$2-$1 w0 w1 dev_pid=${REG_PID[dev]}
  import_wchar w0 "$dev_pid"
  case $key in
    os-import)
      bench_measure "same:os-import" "$dev_pid" "$IMPORT_SCRATCH" \
        import_os_import "$IMPORT_WORK/shared.records" "$IMPORT_WORK/same.os-import" --to "$IMPORT_DEV/$prefix"
      IMPORT_NOTE[same:os-import]=$(import_check_records "$IMPORT_WORK/same.os-import" "os-import (same registry)" shared)
      ;;
    skopeo-seq)
      import_pairs shared "$IMPORT_DEV" "$prefix" >"$IMPORT_WORK/pairs"
      bench_measure "same:skopeo-seq" "$dev_pid" "$IMPORT_SCRATCH" \
        import_skopeo_seq "$IMPORT_WORK/pairs" "$IMPORT_WORK/same.skopeo.log"
      ;;
  esac
  import_wchar w1 "$dev_pid"
  IMPORT_WROTE[same:$key]+="$((w1 - w0)) "
  import_check_images shared "$IMPORT_DEV" "$prefix" "$key (same registry)"
}

# --- report -----------------------------------------------------------------

declare -gA IMPORT_CARRIED=()
IMPORT_STDERR=() # what os-import said on stderr (quiet when it is not a terminal)

# Median of integer samples.
import_median() {
  printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# MiB with one decimal.
mib() { awk -v b="$1" -v m="$MIB" 'BEGIN { printf "%.1f", b / m }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }

# import_table BASE-KEY ROW...: ROW is "KEY|LABEL"; prints medians of wall
# time, client and target-registry CPU, what the target registry wrote.
import_table() {
  local base=$1 row key label median min max base_ms wrote samples=()
  shift
  base_ms=$(median_ms WALL "$base")
  printf '  %-46s %9s %8s %8s %8s %10s %10s %9s\n' contender "median ms" "min ms" "max ms" "vs os-i." "client cpu" "target cpu" "wrote MiB"
  for row in "$@"; do
    IFS='|' read -r key label <<<"$row"
    read -r -a samples <<<"${MEASURE_WALL[$key]}"
    read -r median min max < <(bench_stats "${samples[@]}")
    read -r -a samples <<<"${IMPORT_WROTE[$key]:-0}"
    wrote=$(mib "$(import_median "${samples[@]}")")
    printf '  %-46s %9s %8s %8s %8s %10s %10s %9s\n' "$label" "$median" "$min" "$max" \
      "$(ratio "$median" "$base_ms")" "$(median_ms CLIENT "$key")" "$(median_ms SERVER "$key")" "$wrote"
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

# --- the benchmark ----------------------------------------------------------

IMPORT_N_SMALL=20
bench_import() {
  local runs=${RUNS:-3}
  OS_IMPORT=$BIN/os-import
  [ -x "$OS_IMPORT" ] || reg_die "$OS_IMPORT was not built"
  local tool
  for tool in skopeo cosign oras openssl; do
    command -v "$tool" >/dev/null || reg_die "$tool is not installed (run scripts/setup)"
  done
  [ -x /usr/bin/time ] || reg_die "/usr/bin/time is not installed (run scripts/setup)"
  local load
  read -r load _ </proc/loadavg || load=unknown
  local started
  started=$(now_us)

  say "import: starting the source registry (dev), pushing the images (once)"
  reg_start dev
  IMPORT_DEV=${REG_HOST[dev]}
  local storage work=""
  storage=$(registry_storage dev)
  # Blobs are made next to the registries (tmpfs unless --registry-disk).
  reg_mktemp work "${REG_STORAGE_TMPDIR:-}"
  IMPORT_WORK=$work
  IMPORT_SCRATCH=$work/times
  IMPORT_HOME=$work/home # cosign's and oras' HOME: offline, no ~/.sigstore, no ~/.docker
  mkdir -p "$IMPORT_HOME"
  IMPORT_KEY=$work/cosign
  (cd "$work" && COSIGN_PASSWORD=$IMPORT_PASSWORD HOME=$IMPORT_HOME cosign generate-key-pair --output-key-prefix cosign) \
    >"$work/keygen.log" 2>&1 || reg_die "cosign generate-key-pair failed: $(tail -n 5 "$work/keygen.log")"

  local i
  import_set small "$IMPORT_N_SMALL" "small-@-1:$((8 * MIB))" "small-@-2:$((8 * MIB))" "small-@-3:$((8 * MIB))"
  import_set large 5 "large-@-1:$((64 * MIB))" "large-@-2:$((64 * MIB))"
  import_set shared 20 "base-1:$((16 * MIB))" "base-2:$((16 * MIB))" "shared-@:$((4 * MIB))"
  import_set huge 1 "huge-1:$((1024 * MIB))"
  say "import: signing the $IMPORT_N_SMALL images of the small set (cosign .sig and an OCI 1.1 referrer)"
  import_sign small
  say "import: set-up took $(fmt_ms $(($(now_us) - started))) ms"

  # Warm-up (page cache, binaries): each client once on one image.
  head -n 1 "$work/small.records" >"$work/warm.records"
  import_target
  import_os_import "$work/warm.records" "$work/warm.out" --to "$IMPORT_PROD/warm/os"
  import_pairs small "$IMPORT_PROD" warm/skopeo | head -n 1 >"$work/pairs"
  import_skopeo_seq "$work/pairs" "$work/warm.log"
  import_pairs small "$IMPORT_PROD" warm/cosign | head -n 1 >"$work/pairs"
  import_cosign_copy "$work/pairs" "$work/warm.log"
  import_pairs small "$IMPORT_PROD" warm/oras | head -n 1 >"$work/pairs"
  import_oras_cp "$work/pairs" "$work/warm.log"
  import_target_done warm

  local round
  for ((round = 1; round <= runs; round++)); do
    say "import: round $round/$runs: small (signed) set"
    import_round_os small "$round"
    import_round_peer small skopeo-seq import_skopeo_seq "$round"
    import_round_peer small skopeo-par import_skopeo_par "$round"
    import_round_peer small cosign import_cosign_copy "$round"
    import_round_peer small oras import_oras_cp "$round"
    say "import: round $round/$runs, small (ms): os-import $(last_ms small:os-import) (again $(last_ms again:os-import), --no-signatures $(last_ms again:os-import-nosig), skopeo sync no-op $(last_ms again:skopeo-sync)), skopeo $(last_ms small:skopeo-seq), skopeo -P4 $(last_ms small:skopeo-par), cosign copy $(last_ms small:cosign), oras cp -r $(last_ms small:oras)"
    say "import: round $round/$runs: large set"
    import_round_os large "$round"
    import_round_peer large skopeo-seq import_skopeo_seq "$round"
    import_round_peer large skopeo-par import_skopeo_par "$round"
    say "import: round $round/$runs, large (ms): os-import $(last_ms large:os-import), skopeo $(last_ms large:skopeo-seq), skopeo -P4 $(last_ms large:skopeo-par)"
    say "import: round $round/$runs: shared-base set"
    import_round_os shared "$round"
    import_round_peer shared skopeo-seq import_skopeo_seq "$round"
    import_round_peer shared skopeo-par import_skopeo_par "$round"
    import_round_same os-import "$round"
    import_round_same skopeo-seq "$round"
    say "import: round $round/$runs, shared (ms): os-import $(last_ms shared:os-import), skopeo $(last_ms shared:skopeo-seq), skopeo -P4 $(last_ms shared:skopeo-par); same registry: os-import $(last_ms same:os-import), skopeo $(last_ms same:skopeo-seq)"
  done

  # Memory: one image, one 1 GiB layer, once each, under /usr/bin/time -v.
  say "import: 1 GiB layer, os-import then skopeo, under /usr/bin/time -v"
  local huge_digest
  read -r _ huge_digest <"$work/huge.set"
  import_target
  IMPORT_REQUEST_COST=$(import_request_cost)
  /usr/bin/time -v -o "$work/huge.os.time" "$OS_IMPORT" --to "$IMPORT_PROD/huge" \
    <"$work/huge.records" >"$work/huge.os-import" 2>"$work/huge.os-import.err" ||
    reg_die "os-import of the 1 GiB image failed: $(tail -n 5 "$work/huge.os-import.err")"
  local huge_counters
  huge_counters=$(import_check_records "$work/huge.os-import" "os-import (1 GiB layer)" huge)
  import_check_images huge "$IMPORT_PROD" huge "os-import (1 GiB layer)"
  import_target_done huge:os-import
  import_target
  import_pairs huge "$IMPORT_PROD" huge >"$work/pairs"
  local src dst
  read -r src dst <"$work/pairs"
  /usr/bin/time -v -o "$work/huge.skopeo.time" "${SKOPEO_COPY[@]}" "docker://$src" "docker://$dst" \
    >"$work/huge.skopeo.log" 2>&1 || reg_die "skopeo copy of the 1 GiB image failed: $(tail -n 5 "$work/huge.skopeo.log")"
  import_check_images huge "$IMPORT_PROD" huge "skopeo (1 GiB layer)"
  import_target_done huge:skopeo
  reg_stop dev

  # --- report ---
  local cosign_version skopeo_version oras_version
  cosign_version=$(dpkg-query -W -f '${Version}' cosign 2>/dev/null) || cosign_version=unknown
  skopeo_version=$(skopeo --version | awk '{ print $NF }')
  oras_version=$(oras version 2>/dev/null | awk '$1 == "Version:" { print $2 }')
  echo
  echo "import: dev -> prod on two docker-registry instances on loopback; every contender of every round gets a fresh prod registry; $runs round$([ "$runs" -eq 1 ] || echo s), median wall time"
  echo "  $("$OS_IMPORT" --version) (one process, the set's records from os-digest on stdin, --jobs 8, the default); skopeo $skopeo_version (copy --all --preserve-digests); cosign $cosign_version (copy, per image); oras $oras_version (cp -r, per image)"
  echo "  $(docker-registry --version | awk '{ print "docker-registry", $NF }'); nproc $(nproc); load average $load at the start"
  echo "  registry storage: $storage"
  echo "  client cpu: user + system of the contender's processes (their rusage, as /usr/bin/time reports it); target cpu: of the prod registry meanwhile; wrote: bytes the prod registry wrote (its storage and sockets, from /proc/PID/io) -- about what it was sent"
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
  local key sigs refs
  echo "  carried at the target (last round; of $IMPORT_N_SMALL images): cosign signature tag / OCI 1.1 referrer"
  for key in os-import skopeo-seq skopeo-par cosign oras; do
    read -r sigs refs <<<"${IMPORT_CARRIED[small:$key]}"
    printf '    %-12s %2s / %2s\n' "$key" "$sigs" "$refs"
  done
  echo "  os-import's events (last round): $(import_counters "${IMPORT_NOTE[small:os-import]}")"
  echo
  echo "large: 5 images x 2 layers x 64 MiB ($large_mib MiB)"
  import_table large:os-import \
    "large:os-import|os-import, 1 process, 5 records" \
    "large:skopeo-seq|skopeo copy x5, sequential" \
    "large:skopeo-par|skopeo copy x5, 4 in parallel"
  echo "  os-import's events (last round): $(import_counters "${IMPORT_NOTE[large:os-import]}")"
  echo
  echo "shared: 20 services (bench/shared/svc1..20, different repositories of dev) sharing 2 base layers of 16 MiB, each with its own 4 MiB layer: $(mib "${IMPORT_UNIQUE[shared]}") MiB distinct, $(mib "${IMPORT_BYTES[shared]}") MiB if every image is sent whole"
  import_table shared:os-import \
    "shared:os-import|os-import, dev -> prod" \
    "shared:skopeo-seq|skopeo copy x20, sequential, dev -> prod" \
    "shared:skopeo-par|skopeo copy x20, 4 in parallel, dev -> prod"
  echo "  os-import's events, dev -> prod (last round): $(import_counters "${IMPORT_NOTE[shared:os-import]}")"
  echo "  same registry (dev/bench/shared/svcN -> dev/promoted/...; target cpu and wrote are dev's):"
  import_table same:os-import \
    "same:os-import|os-import, dev -> dev" \
    "same:skopeo-seq|skopeo copy x20, sequential, dev -> dev"
  echo "  os-import's events, dev -> dev (last round): $(import_counters "${IMPORT_NOTE[same:os-import]}")"
  echo
  echo "re-promotion: the small set again, onto the prod os-import just filled"
  import_table again:os-import \
    "again:os-import|os-import, 1 process, $IMPORT_N_SMALL records" \
    "again:os-import-nosig|os-import --no-signatures (image only)" \
    "again:skopeo-sync|skopeo sync (yaml, $IMPORT_N_SMALL repos, image only)"
  echo "  os-import's events (last round): $(import_counters "${IMPORT_NOTE[again:os-import]}"); skopeo sync: ${IMPORT_NOTE[again:skopeo-sync]}"
  local key source_cpu=()
  for key in again:os-import again:os-import-nosig again:skopeo-sync; do
    read -r -a samples <<<"${IMPORT_SOURCE_CPU[$key]}"
    source_cpu+=("$(import_median "${samples[@]}")")
  done
  echo "  the source registry (dev) meanwhile, median cpu ms: os-import $(fmt_ms "${source_cpu[0]}"), --no-signatures $(fmt_ms "${source_cpu[1]}"), skopeo sync $(fmt_ms "${source_cpu[2]}")"
  echo "  one request costs this registry $IMPORT_REQUEST_COST ms of CPU even when it touches no storage (400 HEAD /v2/, one kept-alive curl connection): a signed no-op asks three tags per image at the target (the image's, its .sig, its referrers' fallback index) and two at the source, an image-only one (os-import --no-signatures, skopeo sync) one"
  echo
  local os_rss sk_rss os_cpu sk_cpu os_wall sk_wall
  os_rss=$(time_field "$work/huge.os.time" "Maximum resident set size")
  sk_rss=$(time_field "$work/huge.skopeo.time" "Maximum resident set size")
  os_cpu=$(awk -v u="$(time_field "$work/huge.os.time" "User time")" -v s="$(time_field "$work/huge.os.time" "System time")" 'BEGIN { printf "%.2f", u + s }')
  sk_cpu=$(awk -v u="$(time_field "$work/huge.skopeo.time" "User time")" -v s="$(time_field "$work/huge.skopeo.time" "System time")" 'BEGIN { printf "%.2f", u + s }')
  os_wall=$(time_field "$work/huge.os.time" "Elapsed (wall clock)")
  sk_wall=$(time_field "$work/huge.skopeo.time" "Elapsed (wall clock)")
  echo "memory: one image with one 1 GiB layer, once, /usr/bin/time -v"
  printf '  %-46s %14s %10s %10s\n' contender "max RSS (MiB)" "cpu s" "wall"
  printf '  %-46s %14s %10s %10s\n' "os-import" "$(awk -v k="$os_rss" 'BEGIN { printf "%.1f", k / 1024 }')" "$os_cpu" "$os_wall"
  printf '  %-46s %14s %10s %10s\n' "skopeo copy" "$(awk -v k="$sk_rss" 'BEGIN { printf "%.1f", k / 1024 }')" "$sk_cpu" "$sk_wall"
  echo "  os-import's event: $(import_counters "$huge_counters")"

  # --- targets ---
  local os seq par cos oras os_l seq_l par_l again sync os_c seq_c
  os=$(median_ms WALL small:os-import)
  seq=$(median_ms WALL small:skopeo-seq)
  par=$(median_ms WALL small:skopeo-par)
  cos=$(median_ms WALL small:cosign)
  oras=$(median_ms WALL small:oras)
  os_l=$(median_ms WALL large:os-import)
  seq_l=$(median_ms WALL large:skopeo-seq)
  par_l=$(median_ms WALL large:skopeo-par)
  again=$(median_ms WALL again:os-import)
  sync=$(median_ms WALL again:skopeo-sync)
  local again_nosig
  again_nosig=$(median_ms WALL again:os-import-nosig)
  os_c=$(median_ms CLIENT small:os-import)
  seq_c=$(median_ms CLIENT small:skopeo-seq)
  local os_c_l seq_c_l
  os_c_l=$(median_ms CLIENT large:os-import)
  seq_c_l=$(median_ms CLIENT large:skopeo-seq)
  local samples=() os_shared skopeo_shared unique_shared
  read -r -a samples <<<"${IMPORT_WROTE[shared:os-import]}"
  os_shared=$(import_median "${samples[@]}")
  read -r -a samples <<<"${IMPORT_WROTE[shared:skopeo-seq]}"
  skopeo_shared=$(import_median "${samples[@]}")
  unique_shared=${IMPORT_UNIQUE[shared]}
  local same_copied same_mounted
  read -r _ same_copied same_mounted _ _ <<<"${IMPORT_NOTE[same:os-import]}"
  local again_bytes again_copied
  read -r again_bytes again_copied _ _ _ <<<"${IMPORT_NOTE[again:os-import]}"
  echo
  echo "targets:"
  bench_target "small: os-import at least 1.4x faster than sequential skopeo ($(ratio "$seq" "$os"))" "$seq" "$os" 'a >= 1.4 * b'
  bench_target "small: os-import faster than 4-parallel skopeo ($(ratio "$par" "$os"))" "$par" "$os" 'a > b'
  bench_target "large: os-import at least 1.4x faster than sequential skopeo ($(ratio "$seq_l" "$os_l"))" "$seq_l" "$os_l" 'a >= 1.4 * b'
  bench_target "large: os-import faster than 4-parallel skopeo ($(ratio "$par_l" "$os_l"))" "$par_l" "$os_l" 'a > b'
  bench_target "signed: os-import faster than cosign copy ($(ratio "$cos" "$os"))" "$cos" "$os" 'a > b'
  bench_target "signed: os-import faster than oras cp -r ($(ratio "$oras" "$os"))" "$oras" "$os" 'a > b'
  read -r sigs refs <<<"${IMPORT_CARRIED[small:os-import]}"
  bench_target "signed: os-import carries what cosign copy and oras cp -r carry together (signatures $sigs/$IMPORT_N_SMALL, referrers $refs/$IMPORT_N_SMALL; cosign copy $(cut -d' ' -f1 <<<"${IMPORT_CARRIED[small:cosign]}")/$(cut -d' ' -f2 <<<"${IMPORT_CARRIED[small:cosign]}"), oras $(cut -d' ' -f1 <<<"${IMPORT_CARRIED[small:oras]}")/$(cut -d' ' -f2 <<<"${IMPORT_CARRIED[small:oras]}"))" \
    "$((sigs + refs))" "$((2 * IMPORT_N_SMALL))" 'a == b'
  bench_target "small: os-import's client CPU at most 1/3 of sequential skopeo's ($os_c ms vs $seq_c ms: $(ratio "$os_c" "$seq_c"); large: $os_c_l vs $seq_c_l ms, $(ratio "$os_c_l" "$seq_c_l"))" \
    "$os_c" "$seq_c" 'a * 3 <= b'
  bench_target "shared: the shared base layers sent once, dev -> prod (prod wrote $(mib "$os_shared") MiB for os-import, $(mib "$skopeo_shared") MiB for sequential skopeo; $(mib "$unique_shared") MiB distinct)" \
    "$os_shared" "$unique_shared" 'a <= 1.1 * b'
  bench_target "shared: same-registry promotion mounts every blob (os-import: $same_mounted mounted, $same_copied copied)" \
    "$same_copied" "$same_mounted" 'a == 0 && b > 0'
  bench_target "re-promotion: os-import at least 20x faster than its first promotion ($(ratio "$os" "$again"); sent $again_bytes bytes, $again_copied blobs)" \
    "$os" "$again" 'a >= 20 * b'
  bench_target "re-promotion: os-import --no-signatures at least 3x faster than the skopeo sync no-op, the same no-op: both check only the image ($(ratio "$sync" "$again_nosig"); with signatures and referrers also checked at both ends, $(ratio "$sync" "$again"))" \
    "$sync" "$again_nosig" 'a >= 3 * b'
  bench_target "memory: os-import's peak RSS under 32 MiB with a 1 GiB layer ($(awk -v k="$os_rss" 'BEGIN { printf "%.1f", k / 1024 }') MiB; skopeo $(awk -v k="$sk_rss" 'BEGIN { printf "%.1f", k / 1024 }') MiB)" \
    "$os_rss" 32768 'a < b'
  if [ "${#IMPORT_STDERR[@]}" -gt 0 ]; then
    echo "os-import wrote on stderr (not a terminal; it should be quiet):"
    printf '  %s\n' "${IMPORT_STDERR[@]}"
  fi
  echo "checked: every contender's target holds every image's exact manifest bytes (sha256 of the bytes at prod = the source digest); os-import's records carry an import event and no error, and its targets every signature and referrer"
  say "import: took $(fmt_ms $(($(now_us) - started))) ms"
}
