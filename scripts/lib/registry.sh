# shellcheck shell=bash
# Shared helpers for scripts/demo and scripts/bench: throwaway registries on
# 127.0.0.1, a small deterministic OCI image layout, and pushing it.
#
# Source it from a script that runs under `set -euo pipefail`, then call
# reg_init once: it installs the EXIT/INT/TERM/HUP traps that stop every registry
# started here and remove every temporary directory made here.
#
#   reg_init                                  traps; must come first
#   reg_on_exit CMD                           runs CMD at exit, before the registries stop
#   reg_mktemp VAR [PARENT]                   new temp dir into VAR (removed at exit)
#   reg_start NAME                            starts a registry; sets REG_HOST[NAME]
#                                             (storage under REG_STORAGE_TMPDIR if set)
#   reg_stop NAME                             stops it early (reg_init's trap does it otherwise)
#   reg_build_layout DIR TAG SERVICE [SEED]   writes an OCI layout; sets REG_LAYOUT_DIGEST
#   reg_push_layout DIR TAG HOST REPO         skopeo copy --preserve-digests to HOST/REPO:TAG
#   reg_now_ms                                wall clock in ms (for timings)
#
# Registries serve plain HTTP on a free loopback port, store into a temp dir,
# and log (level warn, no access log) into REG_LOG[NAME].
#
# Variables set here are read by the scripts that source this file:
# shellcheck disable=SC2034

if [ -n "${REG_LIB_LOADED:-}" ]; then return 0; fi
REG_LIB_LOADED=1

# The manifest and index media types a client accepts when resolving a tag.
REG_ACCEPT='application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json'
REG_OCI_MANIFEST='application/vnd.oci.image.manifest.v1+json'
REG_OCI_INDEX='application/vnd.oci.image.index.v1+json'
REG_OCI_CONFIG='application/vnd.oci.image.config.v1+json'
REG_OCI_LAYER='application/vnd.oci.image.layer.v1.tar'

# How long a registry may take to answer /v2/ after it is started.
: "${REG_START_TIMEOUT_MS:=15000}"

declare -gA REG_HOST=() REG_PID=() REG_LOG=() REG_DIR=()
REG_TMPDIRS=()
REG_PIDS=()
REG_PROG=${REG_PROG:-${0##*/}}

reg_log() { printf '%s: %s\n' "$REG_PROG" "$*" >&2; }
# Also into REG_DIE_LOG when set: a check run by hyperfine (--prepare) has
# its output thrown away, and the script shows this file instead.
reg_die() {
  printf '%s: error: %s\n' "$REG_PROG" "$*" >&2
  [ -z "${REG_DIE_LOG:-}" ] || printf '%s: error: %s\n' "$REG_PROG" "$*" >>"$REG_DIE_LOG"
  exit 1
}

reg_now_ms() {
  local ns
  ns=$(date +%s%N)
  printf '%s\n' "$((ns / 1000000))"
}

REG_EXIT_HOOKS=()
reg_on_exit() { REG_EXIT_HOOKS+=("$1"); }

reg_init() {
  trap reg_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap 'exit 129' HUP
}

# Stops every process and removes every directory this script registered.
# Runs once, from the EXIT trap, whatever the exit status.
reg_cleanup() {
  local status=$? pid dir deadline hook
  trap - EXIT INT TERM HUP
  set +e
  for hook in "${REG_EXIT_HOOKS[@]}"; do
    "$hook"
  done
  for pid in "${REG_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null
  done
  # Give them a moment to exit cleanly, then insist.
  deadline=$(($(reg_now_ms) + 5000))
  for pid in "${REG_PIDS[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ "$(reg_now_ms)" -lt "$deadline" ]; do
      sleep 0.02
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  for dir in "${REG_TMPDIRS[@]}"; do
    rm -rf -- "$dir"
  done
  exit "$status"
}

# reg_mktemp VAR [PARENT]: makes a temporary directory (in PARENT, else
# TMPDIR), removed at exit, into VAR.
# (Not `dir=$(...)`: a command substitution's subshell could not record it.)
reg_mktemp() {
  local -n _reg_out=$1
  local parent=${2:-${TMPDIR:-/tmp}}
  _reg_out=$(mktemp -d "$parent/onestream-${REG_PROG}.XXXXXX")
  REG_TMPDIRS+=("$_reg_out")
}

# Forgets a pid that was waited for, so the exit trap never signals a
# process that reused the number.
reg_untrack_pid() {
  local pid kept=()
  for pid in "${REG_PIDS[@]}"; do
    [ "$pid" = "$1" ] || kept+=("$pid")
  done
  REG_PIDS=("${kept[@]}")
}

# True when something already listens on 127.0.0.1:PORT.
reg_port_busy() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

reg_free_port() {
  local port tries=0
  while [ "$tries" -lt 200 ]; do
    port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
    if ! reg_port_busy "$port"; then
      printf '%s\n' "$port"
      return 0
    fi
    tries=$((tries + 1))
  done
  reg_die "no free port found on 127.0.0.1"
}

# reg_start NAME: starts a registry on a free 127.0.0.1 port with its own
# temporary storage (under REG_STORAGE_TMPDIR when set, e.g. /dev/shm: the
# registry fsyncs every file it writes, so the medium matters for pushes)
# and waits until it answers GET /v2/. Sets REG_HOST[NAME] (127.0.0.1:PORT),
# REG_PID[NAME], REG_LOG[NAME], REG_DIR[NAME].
reg_start() {
  local name=$1 dir port config log pid instance deadline headers
  command -v docker-registry >/dev/null || reg_die "docker-registry is not installed (run scripts/setup)"
  reg_mktemp dir "${REG_STORAGE_TMPDIR:-}"
  mkdir -p "$dir/storage"
  config=$dir/config.yml
  log=$dir/registry.log
  # Each registry answers with a header naming this instance, so a server
  # that already sat on the port can never be mistaken for ours.
  instance="$name-$$-$RANDOM$RANDOM"
  for _ in 1 2 3 4 5; do
    port=$(reg_free_port)
    cat >"$config" <<YAML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  secret: $instance
  headers:
    X-Onestream-Registry: [$instance]
YAML
    docker-registry serve "$config" >"$log" 2>&1 </dev/null &
    pid=$!
    REG_PIDS+=("$pid")
    deadline=$(($(reg_now_ms) + REG_START_TIMEOUT_MS))
    while :; do
      if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid" 2>/dev/null || true
        reg_untrack_pid "$pid"
        if grep -q 'address already in use' "$log"; then
          continue 2 # lost a race for the port: another one
        fi
        reg_die "registry $name exited at start; its log ($log):$(printf '\n'; tail -n 20 "$log")"
      fi
      if headers=$(curl -fsS --max-time 2 -D - -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null) &&
        grep -qi "^X-Onestream-Registry: $instance" <<<"${headers//$'\r'/}"; then
        break
      fi
      if [ "$(reg_now_ms)" -ge "$deadline" ]; then
        reg_die "registry $name did not answer on 127.0.0.1:$port within ${REG_START_TIMEOUT_MS} ms; log:$(printf '\n'; tail -n 20 "$log")"
      fi
      sleep 0.02
    done
    REG_HOST[$name]=127.0.0.1:$port
    REG_PID[$name]=$pid
    REG_LOG[$name]=$log
    REG_DIR[$name]=$dir
    return 0
  done
  reg_die "registry $name: could not get a free port after 5 attempts"
}

# reg_stop NAME: stops a registry reg_start started (waits until it is gone).
reg_stop() {
  local pid=${REG_PID[$1]:-}
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  reg_untrack_pid "$pid"
  unset 'REG_PID[$1]' 'REG_HOST[$1]'
}

# Writes FILE into LAYOUT's blob store; prints "sha256:HEX SIZE".
reg_add_blob() {
  local layout=$1 file=$2 hex size
  hex=$(sha256sum <"$file") hex=${hex%% *}
  size=$(stat -c %s "$file")
  mkdir -p "$layout/blobs/sha256"
  cp -- "$file" "$layout/blobs/sha256/$hex"
  printf 'sha256:%s %s\n' "$hex" "$size"
}

# reg_build_layout DIR TAG SERVICE [SEED]: a small single-platform
# (linux/amd64) OCI image layout in DIR: two uncompressed tar layers (the
# service's "binary", then its config file), a config, a manifest, and
# index.json naming it TAG. Byte-for-byte the same for the same arguments;
# SEED varies the content. Sets REG_LAYOUT_DIGEST to the manifest digest.
reg_build_layout() {
  local layout=$1 tag=$2 service=$3 seed=${4:-0} work
  [[ $service =~ ^[a-z0-9][a-z0-9._-]*$ ]] || reg_die "reg_build_layout: bad service name: $service"
  [[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$ ]] || reg_die "reg_build_layout: bad tag: $tag"
  [[ $seed =~ ^[A-Za-z0-9._-]*$ ]] || reg_die "reg_build_layout: bad seed: $seed"
  mkdir -p "$layout"
  reg_mktemp work
  # Names, owners, times and modes are all fixed: the umask does not matter.
  local tar_flags=(--format=gnu --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner
    '--mode=u+rwX,go+rX,go-w')
  mkdir -p "$work/l1/app" "$work/l2/etc/$service"
  printf '#!/bin/sh\necho "%s %s (seed %s)"\n' "$service" "$tag" "$seed" >"$work/l1/app/$service"
  chmod 0755 "$work/l1/app/$service"
  printf 'listen: 0.0.0.0:8080\nservice: %s\nversion: %s\nseed: %s\n' "$service" "$tag" "$seed" \
    >"$work/l2/etc/$service/config.yaml"
  chmod 0644 "$work/l2/etc/$service/config.yaml"
  tar "${tar_flags[@]}" -C "$work/l1" -cf "$work/layer1.tar" app
  tar "${tar_flags[@]}" -C "$work/l2" -cf "$work/layer2.tar" etc

  local l1 l1size l2 l2size cfg cfgsize man mansize
  read -r l1 l1size < <(reg_add_blob "$layout" "$work/layer1.tar")
  read -r l2 l2size < <(reg_add_blob "$layout" "$work/layer2.tar")
  # Uncompressed layers: each diff_id is the layer's own digest.
  printf '{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":{"Entrypoint":["/app/%s"],"Env":["PATH=/app:/usr/bin:/bin"],"Labels":{"org.opencontainers.image.title":"%s","org.opencontainers.image.version":"%s"}},"rootfs":{"type":"layers","diff_ids":["%s","%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"scripts/lib/registry.sh: /app/%s"},{"created":"1970-01-01T00:00:00Z","created_by":"scripts/lib/registry.sh: /etc/%s/config.yaml"}]}' \
    "$service" "$service" "$tag" "$l1" "$l2" "$service" "$service" >"$work/config.json"
  read -r cfg cfgsize < <(reg_add_blob "$layout" "$work/config.json")
  printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"%s","digest":"%s","size":%s},"layers":[{"mediaType":"%s","digest":"%s","size":%s},{"mediaType":"%s","digest":"%s","size":%s}],"annotations":{"org.opencontainers.image.title":"%s","org.opencontainers.image.version":"%s"}}' \
    "$REG_OCI_MANIFEST" "$REG_OCI_CONFIG" "$cfg" "$cfgsize" \
    "$REG_OCI_LAYER" "$l1" "$l1size" "$REG_OCI_LAYER" "$l2" "$l2size" \
    "$service" "$tag" >"$work/manifest.json"
  read -r man mansize < <(reg_add_blob "$layout" "$work/manifest.json")
  printf '{"schemaVersion":2,"mediaType":"%s","manifests":[{"mediaType":"%s","digest":"%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
    "$REG_OCI_INDEX" "$REG_OCI_MANIFEST" "$man" "$mansize" "$tag" >"$layout/index.json"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
  rm -rf -- "$work"
  REG_LAYOUT_DIGEST=$man
}

# reg_layout_manifest DIR TAG: the digest index.json names for TAG.
reg_layout_manifest() {
  local digest
  digest=$(jq -r --arg tag "$2" \
    '[.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $tag) | .digest][0] // empty' \
    "$1/index.json")
  [ -n "$digest" ] || reg_die "$1: no manifest tagged $2 in index.json"
  printf '%s\n' "$digest"
}

# reg_push_layout DIR TAG HOST REPO: copies the layout's TAG to HOST/REPO:TAG
# with skopeo, keeping its digest.
reg_push_layout() {
  local layout=$1 tag=$2 host=$3 repo=$4
  skopeo --insecure-policy copy --quiet --preserve-digests --dest-tls-verify=false \
    "oci:$layout:$tag" "docker://$host/$repo:$tag" >&2
}
