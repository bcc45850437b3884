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
#                             report on stderr); dies with the failing check's words;
#                             HF_CPU_LOG is JSON's name with .cpu for .json
#   hf_stat JSON NAME FIELD   median|min|max|mean of command NAME, in ms with one decimal
#   hf_ratio A B FORMAT       printf FORMAT of A / B (FORMAT e.g. %.2fx)
#   hf_target TEXT A B COND   a PASS/FAIL line; COND is a jq expression of a and b
#   hf_client_cpu JSON NAME   user + system of command NAME's processes, ms (hyperfine's
#                             mean over the runs: 1.15 reports no per-run figure)
#   hf_cpu_open KEY PID...    (in --prepare, after the set-up) the CPU and the bytes written
#                             of the processes PID so far, to be charged to KEY's run
#   hf_cpu_close              (in the next --prepare, before its set-up, and once after
#                             hyperfine) appends "KEY µs bytes" (since) per open sample to HF_CPU_LOG
#   hf_cpu_median KEY         median CPU of KEY's samples in HF_CPU_LOG, ms; "-" without any
#   hf_sample KEY COLUMN      the median of column 2 (CPU µs) or 3 (bytes written)
#   hf_median                 the median of the numbers on stdin, one a line; "-" without any
#   harness_restart NAME      a fresh registry NAME on empty storage (HARNESS_CONTROL set
#                             before harness_start); sets HARNESS[NAME_host|pid|dir]
#   us_ms US                  microseconds as milliseconds with one decimal ("-" stays "-")
#
# Sourced by scripts/bench after scripts/lib/registry.sh (reg_die, reg_on_exit)
# and the release build ($BIN).
#
# Variables set here are read by scripts/bench:
# shellcheck disable=SC2034

declare -gA HARNESS=()
HF_CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
HF_CPU_LOG=""
export HF_CLK_TCK
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
  [ -z "${HARNESS_CONTROL:-}" ] || args+=(--control "$HARNESS_CONTROL")
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

# harness_restart NAME: works from any process (hyperfine's --prepare too,
# with BIN and HARNESS_CONTROL exported); prints nothing.
harness_restart() {
  local key value out
  out=$("$BIN/bench-env" restart --control "$HARNESS_CONTROL" "$1") ||
    reg_die "bench-env restart $1 failed"
  while IFS='=' read -r key value; do HARNESS[$key]=$value; done <<<"$out"
}

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
  HF_CPU_LOG=${json%.json}.cpu
  export HF_CPU_LOG
  : >"$HF_CPU_LOG"
  rm -f -- "$HF_CPU_LOG.open"
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

hf_client_cpu() { # JSON NAME
  local ms
  ms=$(jq -r --arg name "$2" \
    '[.results[] | select(.command == $name)][0] // error("no \($name)") | (.user + .system) * 1000' "$1") ||
    reg_die "$1: no user and system time for $2"
  printf '%.1f' "$ms"
}

# The registry's side of a run, which hyperfine cannot see: its CPU time
# from /proc/PID/stat (utime + stime, fields 14 and 15; a registry's
# command name has no space) and the bytes it wrote (wchar in /proc/PID/io:
# its storage and its sockets), read outside the timer around every run.
hf_cpu_us() { # PID...: their CPU so far, µs, summed
  local pid stat=() ticks=0
  for pid in "$@"; do
    read -r -a stat <"/proc/$pid/stat" || reg_die "no /proc/$pid/stat: the process is gone"
    ticks=$((ticks + stat[13] + stat[14]))
  done
  printf '%s' "$((ticks * 1000000 / HF_CLK_TCK))"
}
hf_wchar() { # PID...: the bytes they wrote so far, summed
  local pid key value sum=0
  for pid in "$@"; do
    while read -r key value; do
      [ "$key" != wchar: ] || sum=$((sum + value))
    done <"/proc/$pid/io" || reg_die "no /proc/$pid/io: the process is gone"
  done
  printf '%s' "$sum"
}
hf_cpu_open() { # KEY PID...: one more open sample (hf_cpu_close closes them all)
  local key=$1
  shift
  printf '%s %s %s %s\n' "$key" "$(hf_cpu_us "$@")" "$(hf_wchar "$@")" "$*" >>"$HF_CPU_LOG.open"
}
hf_cpu_close() {
  [ -e "$HF_CPU_LOG.open" ] || return 0
  local key cpu0 w0 pids=() line
  while read -r key cpu0 w0 line; do
    read -r -a pids <<<"$line"
    printf '%s %s %s\n' "$key" "$(($(hf_cpu_us "${pids[@]}") - cpu0))" "$(($(hf_wchar "${pids[@]}") - w0))"
  done <"$HF_CPU_LOG.open" >>"$HF_CPU_LOG"
  rm -f -- "$HF_CPU_LOG.open"
}
# hf_sample KEY COLUMN: the median of KEY's samples in HF_CPU_LOG, column 2
# (CPU, µs) or 3 (bytes written); "-" without any.
hf_sample() {
  jq -Rr --arg key "$1" --argjson col "$(($2 - 1))" 'split(" ") | select(.[0] == $key) | .[$col]' "$HF_CPU_LOG" |
    hf_median || reg_die "$HF_CPU_LOG: not CPU samples"
}
hf_cpu_median() { # KEY
  us_ms "$(hf_sample "$1" 2)"
}

# hf_median: the median of the numbers on stdin (one a line); "-" without any.
hf_median() {
  jq -rn '[inputs] | sort
    | if length == 0 then "-"
      elif length % 2 == 1 then .[length / 2 | floor]
      else (.[length / 2 - 1] + .[length / 2]) / 2 end'
}

us_ms() { # US: "-" stays "-"
  if [ "$1" = - ]; then printf -- -; else printf '%.1f' "$1e-3"; fi
}
