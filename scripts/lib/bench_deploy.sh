# shellcheck shell=bash
# scripts/bench deploy: pin 200 services' manifests to the digests of 200
# verified records, in one os-deploy process, against what a team scripts
# today: one `kubectl set image --local -o yaml` process per service (and,
# for reference, one short Python + PyYAML process for all of them).
#
# Sourced by scripts/bench after its helpers (say, hf_run, hf_stat,
# hf_ratio, hf_target, reg_mktemp, reg_die) and the release build ($BIN);
# defines bench_deploy. Timed by hyperfine. Needs no registry: the records are made here, in
# the shape os-verify writes, so the gate passes.
#
# Variables set here are read by scripts/bench:
# shellcheck disable=SC2034

DEPLOY_SERVICES=200

# deploy_fixture DIR: DIR/manifests/svcNNN.yaml (a Deployment with an init
# container and a pinned sidecar, with comments) and svcNNN-service.yaml (its
# Service; os-deploy reads it too, kubectl needs not), DIR/records
# (one verified record per service) and DIR/expected (the sorted
# "svcNNN.yaml image" lines every contender must produce).
deploy_fixture() {
  local dir=$1 i name digest image
  mkdir -p "$dir/manifests"
  local sidecar
  sidecar="mirror.example.com/library/envoy@sha256:$(printf 'envoy' | sha256sum | cut -c1-64)"
  : >"$dir/records"
  : >"$dir/expected.unsorted"
  for ((i = 1; i <= DEPLOY_SERVICES; i++)); do
    printf -v name 'svc%03d' "$i"
    digest="sha256:$(printf '%s' "$name" | sha256sum | cut -c1-64)"
    image="prod.example.com/onestream/$name"
    cat >"$dir/manifests/$name.yaml" <<YAML
# $name: generated for scripts/bench deploy.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: $name
  labels:
    app.kubernetes.io/name: $name # selector below
spec:
  replicas: 2
  selector:
    matchLabels:
      app.kubernetes.io/name: $name
  template:
    metadata:
      labels:
        app.kubernetes.io/name: $name
    spec:
      initContainers:
        - name: migrate
          image: dev.example.com/onestream/$name:1.0.$i
          args: [migrate]
      containers:
        - name: app
          image: dev.example.com/onestream/$name:1.0.$i # the build's tag
          ports:
            - containerPort: 8080
        - name: envoy
          image: $sidecar
YAML
    # The Service in a file of its own: kubectl set image refuses a file
    # holding an object without a pod template.
    cat >"$dir/manifests/$name-service.yaml" <<YAML
# $name: its Service.
apiVersion: v1
kind: Service
metadata:
  name: $name
spec:
  selector:
    app.kubernetes.io/name: $name
  ports:
    - port: 80
      targetPort: 8080
YAML
    printf '{"service":"%s","image":"%s","digest":"%s","history":[{"step":"verify","tool":"os-verify 0.1.0","at":"2026-11-25T10:00:00Z","image":"%s","keyId":"sha256:%064d","signature":"%s:%s.sig@sha256:%064d","identity":"%s","verified":true}]}\n' \
      "$name" "$image" "$digest" "$image" 0 "$image" "${digest/:/-}" 1 "$image" >>"$dir/records"
    printf '%s.yaml %s@%s\n%s.yaml %s@%s\n%s.yaml %s\n' \
      "$name" "$image" "$digest" "$name" "$image" "$digest" "$name" "$sidecar" >>"$dir/expected.unsorted"
  done
  sort "$dir/expected.unsorted" >"$dir/expected"
}

# Contenders: each writes one pinned file per service into OUT.
deploy_os_deploy() { # DIR OUT
  "$OS_DEPLOY" render "$1/manifests" --out "$2" --records-out "$2.records" --quiet <"$1/records"
}
deploy_kubectl_loop() { # DIR OUT
  local dir=$1 out=$2 record name image digest
  while read -r record; do
    # The fields by plain text, not jq: the loop is kubectl's cost, not a JSON parser's.
    name=${record#*\"service\":\"} name=${name%%\"*}
    image=${record#*\"image\":\"} image=${image%%\"*}
    digest=${record#*\"digest\":\"} digest=${digest%%\"*}
    kubectl set image --local -o yaml -f "$dir/manifests/$name.yaml" \
      "app=$image@$digest" "migrate=$image@$digest" >"$out/$name.yaml"
  done <"$dir/records"
}
deploy_pyyaml() { # DIR OUT
  python3 - "$1" "$2" <<'PY'
import json, os, sys, yaml
src, out = sys.argv[1], sys.argv[2]
with open(os.path.join(src, "records")) as f:
    records = {r["service"]: r for r in map(json.loads, f)}
for name, r in records.items():
    with open(os.path.join(src, "manifests", name + ".yaml")) as f:
        docs = list(yaml.safe_load_all(f))
    pinned = "%s@%s" % (r["image"], r["digest"])
    for doc in docs:
        spec = (doc.get("spec") or {}).get("template", {}).get("spec", {})
        for field in ("initContainers", "containers"):
            for c in spec.get(field) or []:
                if c["name"] in ("app", "migrate"):
                    c["image"] = pinned
    with open(os.path.join(out, name + ".yaml"), "w") as f:
        yaml.safe_dump_all(docs, f, sort_keys=False)
PY
}

# deploy_check WHAT OUT: every service file holds exactly the expected images.
deploy_check() {
  local what=$1 out=$2 got
  got=$(cd "$out" && grep -Ho 'image: [^ ]*' ./*.yaml | sed -e 's|^\./||' -e 's|:image: | |' | sort)
  if [ "$got" != "$(cat "$DEPLOY_WORK/expected")" ]; then
    reg_die "$what pinned the wrong images; first differences:"$'\n'"$(diff <(printf '%s\n' "$got") "$DEPLOY_WORK/expected" | head -n 8)"
  fi
}

# deploy_fresh WHAT OUT: hyperfine's --prepare, before every run of a
# contender: checks what its previous run wrote into OUT (if anything), then
# gives it an empty OUT, so every run is checked, outside the timer.
deploy_fresh() {
  if [ -d "$2" ]; then deploy_check "$1" "$2"; fi
  rm -rf -- "$2" "$2.records"
  mkdir -p "$2"
}

bench_deploy() {
  local runs=${RUNS:-5}
  OS_DEPLOY=$BIN/os-deploy
  [ -x "$OS_DEPLOY" ] || reg_die "$OS_DEPLOY was not built"
  command -v kubectl >/dev/null || reg_die "kubectl is not installed (run scripts/setup)"
  local python=""
  if python3 -c 'import yaml' 2>/dev/null; then python=1; fi
  # Manifests and outputs on the registries' medium (tmpfs unless
  # --registry-disk): on a disk shared with builds, creating 400 small files
  # waits on the journal, and that wait, not the contenders, would be timed.
  reg_mktemp DEPLOY_WORK "${REG_STORAGE_TMPDIR:-}"
  local work=$DEPLOY_WORK
  say "deploy: writing $DEPLOY_SERVICES services' manifests and verified records"
  deploy_fixture "$work"

  # Correctness once, before timing (doubles as a warm-up).
  mkdir -p "$work/check.os" "$work/check.kubectl"
  deploy_os_deploy "$work" "$work/check.os" || reg_die "os-deploy render failed (exit $?)"
  deploy_check "os-deploy render" "$work/check.os"
  [ "$(jq -s '[.[] | select(.error == null and .history[-1].step == "deploy")] | length' "$work/check.os.records")" = "$DEPLOY_SERVICES" ] ||
    reg_die "os-deploy's records lack a deploy event: $(head -c 600 "$work/check.os.records")"
  # Comments and order kept: only the two image lines of each file changed.
  local changed
  changed=$(diff -r "$work/manifests" "$work/check.os" | grep -c '^>' || true)
  [ "$changed" -eq $((2 * DEPLOY_SERVICES)) ] ||
    reg_die "os-deploy changed $changed lines, not the $((2 * DEPLOY_SERVICES)) image lines"
  deploy_kubectl_loop "$work" "$work/check.kubectl"
  deploy_check "the kubectl loop" "$work/check.kubectl"
  say "deploy: correct: os-deploy and the kubectl loop pin the same $((2 * DEPLOY_SERVICES)) images; os-deploy changed nothing else"

  export OS_DEPLOY DEPLOY_WORK REG_PROG
  export -f deploy_os_deploy deploy_kubectl_loop deploy_pyyaml deploy_check deploy_fresh reg_die
  local json=$work/deploy.json out=$work/out
  local contenders=(
    --prepare "deploy_fresh 'os-deploy render' $out.os" -n os-deploy "deploy_os_deploy $work $out.os"
    --prepare "deploy_fresh 'the kubectl loop' $out.kubectl" -n kubectl "deploy_kubectl_loop $work $out.kubectl"
  )
  if [ -n "$python" ]; then
    contenders+=(--prepare "deploy_fresh 'the PyYAML script' $out.python" -n python "deploy_pyyaml $work $out.python")
  fi
  hf_run "$json" --runs "$runs" "${contenders[@]}"
  # The last run of each, which no --prepare came after.
  deploy_check "os-deploy render" "$out.os"
  deploy_check "the kubectl loop" "$out.kubectl"
  [ -z "$python" ] || deploy_check "the PyYAML script" "$out.python"

  local os kubectl_ms key median
  os=$(hf_stat "$json" os-deploy median)
  kubectl_ms=$(hf_stat "$json" kubectl median)
  local rows=("os-deploy|os-deploy render, 1 process" "kubectl|kubectl set image --local x$DEPLOY_SERVICES")
  [ -z "$python" ] || rows+=("python|python3 + PyYAML, 1 process (reference)")

  echo
  echo "deploy: $DEPLOY_SERVICES services (a Deployment with 3 containers + a Service, in 2 files each) pinned from $DEPLOY_SERVICES verified records, $runs rounds, median wall time"
  echo "  files in $(dirname "$work") ($(stat -f -c %T "$work")); $("$OS_DEPLOY" --version); $(hyperfine --version); kubectl $(kubectl version --client 2>/dev/null | awk 'NR == 1 { print $3 }')${python:+; python3 $(python3 -c 'import sys, yaml; print(sys.version.split()[0], "PyYAML", yaml.__version__)')}; nproc $(nproc)"
  echo
  printf '  %-44s %10s %10s %10s %13s\n' contender "median ms" "min ms" "max ms" "vs os-deploy"
  local row name
  for row in "${rows[@]}"; do
    IFS='|' read -r key name <<<"$row"
    median=$(hf_stat "$json" "$key" median)
    printf '  %-44s %10s %10s %10s %13s\n' "$name" "$median" \
      "$(hf_stat "$json" "$key" min)" "$(hf_stat "$json" "$key" max)" "$(hf_ratio "$median" "$os" %.1fx)"
  done
  echo
  echo "targets:"
  hf_target "os-deploy at least 100x faster than the kubectl loop ($(hf_ratio "$kubectl_ms" "$os" %.0fx))" \
    "$kubectl_ms" "$os" 'a >= 100 * b'
}
