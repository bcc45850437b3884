# shellcheck shell=bash
# Shared by the pipeline step scripts (sourced, not run). Each step script
# is exactly what the Azure DevOps templates and the GitHub workflow run, and
# what tests/it/pipelines.rs runs against local registries.
#
#   os_step NAME            names the step for messages (os_die, os_log)
#   os_log MESSAGE...       "pipelines/NAME: MESSAGE" on stderr
#   os_die MESSAGE...       the same as an error, exit 1
#   os_need_value FLAG ARGC a flag's value is present (usage error, exit 2)
#   os_require FLAG VALUE...  every FLAG was given a non-empty VALUE (usage error, exit 2)
#   os_need_file PATH WHAT  a readable, non-empty file
#   os_check_records FILE   every line a record, none an error record, at least one
#   os_acr_login REF...     az acr login for each *.azurecr.io registry named (when az is there)
#   os_acr_login_records FILE [REF...]
#                           the same for the registries FILE's records live in, and REFs
#
# Records travel between steps as files (--in, --out): the last tool's stdout
# never reaches the agent log, where a "##vso[" inside a record would be read
# as a logging command.

OS_STEP=${OS_STEP:-pipelines}

os_step() { OS_STEP=$1; }
os_log() { printf 'pipelines/%s: %s\n' "$OS_STEP" "$*" >&2; }
os_die() {
  printf 'pipelines/%s: error: %s\n' "$OS_STEP" "$*" >&2
  exit 1
}
os_usage_error() {
  printf 'pipelines/%s: error: %s (see --help)\n' "$OS_STEP" "$*" >&2
  exit 2
}

# os_need_value FLAG COUNT: COUNT is "$#" where the flag was read; a flag
# needs one more argument.
os_need_value() {
  [ "$2" -ge 2 ] || os_usage_error "$1 needs a value"
}

os_require() {
  local missing=()
  while [ "$#" -ge 2 ]; do
    [ -n "$2" ] || missing+=("$1")
    shift 2
  done
  [ "${#missing[@]}" -eq 0 ] || os_usage_error "missing ${missing[*]}"
}

os_need_file() {
  [ -s "$1" ] || os_die "$2 $1 is missing or empty"
}

# Every line is a JSON object without "error"; at least one line.
os_check_records() {
  local file=$1 problem
  os_need_file "$file" "records file"
  problem=$(jq -rs '
    if length == 0 then "no records"
    elif any(.[]; type != "object") then "a line that is not a record"
    else [.[] | select(.error) | "\(.service // .image // "?"): \(.error.step)/\(.error.code): \(.error.message)"] | join("\n")
    end' "$file") || problem="not JSON records: $(head -c 300 "$file")"
  [ -z "$problem" ] || os_die "$file holds failed records:"$'\n'"$problem"
}

# az acr login for every Azure Container Registry named (REGISTRY[/PATH]),
# so the tools find its token in the docker config; other registries are
# left to the agent's own docker config or credential helpers.
os_acr_login() {
  local ref host
  command -v az >/dev/null 2>&1 || return 0
  for ref in "$@"; do
    host=${ref%%/*}
    case $host in
      *.azurecr.io) az acr login --name "${host%%.*}" >&2 || os_die "az acr login to $host failed" ;;
    esac
  done
}

# os_acr_login for the registries a records file's images live in (and any
# further REFs, such as a step's target).
os_acr_login_records() {
  local file=$1 images
  shift
  mapfile -t images < <(jq -r '.image' "$file" | sort -u)
  os_acr_login "${images[@]}" "$@"
}
