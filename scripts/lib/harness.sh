# shellcheck shell=bash
# scripts/bench's side of the Rust harness (os-testkit's bench-env binary,
# testkit/src/bin/bench-env.rs) and of hyperfine, its timer.
#
#   harness_start NAME...     starts bench-env with one registry per NAME (storage under
#                             REG_STORAGE_TMPDIR when set); sets HARNESS[NAME_host],
#                             HARNESS[NAME_pid], HARNESS[NAME_dir]
#   harness_stop              stops it (and its registries); the EXIT trap does it otherwise
#   harness_push_tags HOST REPO PREFIX COUNT
#                             the deterministic image under PREFIX1..COUNT; sets
#                             HARNESS[digest], HARNESS[manifest_size]
#   hf_run JSON ARGS...       hyperfine ARGS --export-json JSON (bash shell, its
#                             report on stderr); dies with the failing check's words
#   hf_stat JSON NAME FIELD   median|min|max|mean of command NAME, in ms with one decimal
#   hf_ratio A B FORMAT       printf FORMAT of A / B (FORMAT e.g. %.2fx)
#   hf_target TEXT A B COND   a PASS/FAIL line; COND is a jq expression of a and b
#
# Sourced by scripts/bench after scripts/lib/registry.sh (reg_die, reg_on_exit)
# and the release build ($BIN).
#
# Variables set here are read by scripts/bench:
# shellcheck disable=SC2034

declare -gA HARNESS=()
HARNESS_PID=""
HARNESS_IN=""

# bench-env serves its registries until its stdin reaches end of file: the
# write end is this shell's, so they stop when we close it, or when this
# shell dies, however it dies.
harness_start() {
  local bench_env=$BIN/bench-env line key value args=()
  [ -x "$bench_env" ] || reg_die "$bench_env was not built"
  [ -z "$HARNESS_PID" ] || reg_die "harness_start: bench-env is already running"
  [ -z "${REG_STORAGE_TMPDIR:-}" ] || args+=(--storage-dir "$REG_STORAGE_TMPDIR")
  coproc BENCH_ENV { exec "$bench_env" registries "${args[@]}" "$@"; }
  HARNESS_PID=$BENCH_ENV_PID
  HARNESS_IN=${BENCH_ENV[1]}
  local out=${BENCH_ENV[0]}
  while IFS='=' read -r key value <&"$out"; do
    [ "$key" != ready ] || return 0
    HARNESS[$key]=$value
  done
  harness_stop
  reg_die "bench-env registries $* stopped before it was ready"
}

harness_stop() {
  [ -n "$HARNESS_PID" ] || return 0
  local fd=$HARNESS_IN
  exec {fd}>&-
  wait "$HARNESS_PID" 2>/dev/null || true
  HARNESS_PID="" HARNESS_IN=""
}
reg_on_exit harness_stop

harness_push_tags() { # HOST REPO PREFIX COUNT
  local key value out
  out=$("$BIN/bench-env" push-tags --host "$1" --repo "$2" --prefix "$3" --count "$4") ||
    reg_die "bench-env push-tags to $1/$2 failed"
  while IFS='=' read -r key value; do HARNESS[$key]=$value; done <<<"$out"
}

# hf_run JSON ARGS...: the contenders are this script's functions (exported
# with export -f), run by bash. A check in --prepare that fails writes its
# words to REG_DIE_LOG, which hyperfine would swallow; they are shown here.
hf_run() {
  local json=$1
  shift
  REG_DIE_LOG=${json%.json}.failure
  export REG_DIE_LOG
  : >"$REG_DIE_LOG"
  if ! hyperfine --shell bash --style basic --output inherit --export-json "$json" "$@" >&2; then
    reg_die "hyperfine stopped: $(cat "$REG_DIE_LOG")"
  fi
  REG_DIE_LOG=""
}

hf_stat() { # JSON NAME FIELD
  local ms
  ms=$(jq -r --arg name "$2" --arg field "$3" \
    '[.results[] | select(.command == $name)][0][$field] // error("no \($field) of \($name)") | . * 1000' "$1") ||
    reg_die "$1: no $3 for $2"
  printf '%.1f' "$ms"
}

hf_ratio() { # A B FORMAT
  local ratio
  ratio=$(jq -n --argjson a "$1" --argjson b "$2" '$a / $b')
  # shellcheck disable=SC2059 # FORMAT is the caller's
  printf "$3" "$ratio"
}

hf_target() { # TEXT A B COND
  local verdict=FAIL number='^-?[0-9]+([.][0-9]+)?$'
  [[ $2 =~ $number && $3 =~ $number ]] || reg_die "hf_target: not numbers: $2 $3"
  if jq -en "def a: $2; def b: $3; $4" >/dev/null; then verdict=PASS; fi
  printf '  %-4s  %s\n' "$verdict" "$1"
}
