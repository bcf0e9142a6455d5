#!/usr/bin/env bash
# `make image-test` (opt-in, slow: builds the whole image): build Sift's image, then inside it run `sift --help`,
# import every module, index a few documents in the embedded store and serve them with `sift serve --no-ray`,
# answering /healthz, the image's own HEALTHCHECK and one POST /v1/search from this machine on 127.0.0.1.
# Prints FIGURE lines (build time, image size) and one PASS/FAIL line per check; exits 0 only if all pass.
#
# Route (docs/operating/image.md): podman/buildah with vfs storage and chroot isolation, a local Debian base from
# mmdebstrap (no container registry needed), the container on the host's network (`podman run` cannot run in
# such sandboxes; `buildah run` can). Installs podman, buildah and mmdebstrap with apt-get if missing.
#
# Usage: scripts/image-test.sh [--rm-image] [--no-build]
#   --rm-image   remove the image afterwards (vfs keeps a full copy per image: several GB).
#   --no-build   smoke-test the image already built as IMAGE (no build figures).
# Environment: IMAGE (default as scripts/image-build.sh), IMAGE_BASE (default local), TORCH_VARIANT (default: cpu
# if TORCH_CPU_INDEX answers, else cuda, which is PyPI's default wheel), TORCH_CPU_INDEX, SMOKE_TIMEOUT_S (server
# start, default 300).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
RM_IMAGE=0
BUILD=1
for arg in "$@"; do
    case "$arg" in
        --rm-image) RM_IMAGE=1 ;;
        --no-build) BUILD=0 ;;
        *) echo "usage: $0 [--rm-image] [--no-build]" >&2; exit 2 ;;
    esac
done
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
export IMAGE_BASE=${IMAGE_BASE:-local} CONTAINER_ENGINE=podman
export PODMAN_STORAGE_DRIVER=${PODMAN_STORAGE_DRIVER:-vfs}
export TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
PODMAN=(podman --storage-driver "$PODMAN_STORAGE_DRIVER")
BUILDAH=(buildah --storage-driver "$PODMAN_STORAGE_DRIVER")
SMOKE_TIMEOUT_S=${SMOKE_TIMEOUT_S:-300}
FAILS=0
RESULTS=()

result() {  # result NAME OK DETAIL
    local line
    if [[ "$2" == 0 ]]; then line="PASS $1${3:+: $3}"; else line="FAIL $1${3:+: $3}"; FAILS=$((FAILS + 1)); fi
    RESULTS+=("$line")
    echo "$line"
}

# 1. Tools.
missing=()
for tool in podman buildah mmdebstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
    echo "installing ${missing[*]}"
    sudo_=""; [[ $(id -u) == 0 ]] || sudo_=sudo
    $sudo_ apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -q "${missing[@]}" || exit 1
fi

# 2. Torch variant: the CPU-only wheel when its index answers, else PyPI's default wheel (it carries CUDA too).
if [[ -z "${TORCH_VARIANT:-}" ]]; then
    if python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/torch/', timeout=10)" \
        "$TORCH_CPU_INDEX" 2>/dev/null; then
        TORCH_VARIANT=cpu
    else
        TORCH_VARIANT=cuda
        echo "NOTE: $TORCH_CPU_INDEX does not answer here; building TORCH_VARIANT=cuda (PyPI's default torch wheel)"
    fi
fi
export TORCH_VARIANT
if [[ -z "${IMAGE:-}" ]]; then
    IMAGE=sift:$VERSION
    [[ "$TORCH_VARIANT" == cuda ]] && IMAGE+=-cuda
fi
export IMAGE

# 3. Build (makes the local base first if it is missing).
FIGURES=""
if ((BUILD)); then
    build_log=$(mktemp)
    scripts/image-build.sh 2>&1 | tee "$build_log"
    build_rc=${PIPESTATUS[0]}
    FIGURES=$(grep '^FIGURE ' "$build_log")
    rm -f "$build_log"
    result build "$build_rc" "$IMAGE (torch $TORCH_VARIANT)"
    if [[ "$build_rc" != 0 ]]; then echo "SUMMARY 0 passed, 1 failed"; exit 1; fi
else
    size=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE") || { echo "no image $IMAGE" >&2; exit 1; }
    FIGURES="FIGURE image_size_bytes=$size ($(awk -v b="$size" 'BEGIN { printf "%.2f GB", b / 1e9 }')) (not rebuilt)"
fi

# 4. The image's configuration: unprivileged user, `sift` as entrypoint, a HEALTHCHECK.
cfg=$("${PODMAN[@]}" image inspect --format '{{.Config.User}}|{{json .Config.Entrypoint}}' "$IMAGE")
[[ "$cfg" == '1000:1000|["sift"]' ]]; result "user 1000 (sift), entrypoint sift" $? "$cfg"
health=$("${PODMAN[@]}" image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE" 2>/dev/null)
[[ "$health" == *healthz* ]]; result "healthcheck in the image" $? "$health"

# 5. Inside the image.
ctr=$("${BUILDAH[@]}" from "$IMAGE") || { result "container" 1; exit 1; }
work=$(mktemp -d)
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]] && grep -q sift "/proc/$server_pid/cmdline" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null
    fi
    "${BUILDAH[@]}" rm "$ctr" >/dev/null 2>&1
    ((RM_IMAGE)) && "${PODMAN[@]}" rmi "$IMAGE" >/dev/null 2>&1 && echo "removed $IMAGE"
    rm -rf "$work"
}
trap cleanup EXIT
# The last line a command printed that is not buildah's own exit report.
last_line() { grep -v -e '^subprocess exited' -e '^Error: exit status' <<<"$1" | grep -v '^[[:space:]]*$' | tail -n 1; }
# Models from the image only: no hub downloads during the smoke test.
in_ctr() { "${BUILDAH[@]}" run --isolation chroot --network host --env HF_HUB_OFFLINE=1 "$ctr" -- "$@"; }

out=$(in_ctr sift --help 2>&1); rc=$?
[[ $rc == 0 && "$out" == *serve* && "$out" == *index* ]]; result "sift --help" $? "exit $rc"

# Every module of the eight packages; only a module that needs the dev extra (pytest: search.stores.contract, the
# stores' shared test suite) may fail to import, and is named.
out=$(in_ctr python -c '
import importlib, pkgutil
DEV_ONLY = {"pytest", "schemathesis", "selenium", "hypothesis"}
names, dev, bad = [], [], []
for top in ["models", "search", "ranking", "logs", "indexing", "serving", "training", "sift"]:
    importlib.import_module(top)
    names.append(top)
    for info in pkgutil.walk_packages(importlib.import_module(top).__path__, top + "."):
        try:
            importlib.import_module(info.name)
            names.append(info.name)
        except ModuleNotFoundError as exc:
            (dev if exc.name in DEV_ONLY else bad).append(f"{info.name} ({exc!r})")
        except Exception as exc:
            bad.append(f"{info.name} ({exc!r})")
print(f"{len(names)} modules imported; test-only, need the dev extra: {dev or None}; failed: {bad or None}")
raise SystemExit(1 if bad else 0)
' 2>&1); rc=$?
result "import every module" $rc "$(last_line "$out")"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$work/smoke"
cat >"$work/smoke/docs.jsonl" <<'EOF'
{"id": "argparse", "title": "argparse: parse command line arguments", "text": "The argparse module makes it easy to write user-friendly command-line interfaces: define the arguments a program requires and it parses them out of sys.argv."}
{"id": "json", "title": "json: JSON encoder and decoder", "text": "json.dumps serialises Python objects to JSON text and json.loads parses JSON text back into dictionaries and lists."}
{"id": "pathlib", "title": "pathlib: object-oriented filesystem paths", "text": "Path objects join, inspect and read files: Path.read_text returns the contents of a file as a string."}
{"id": "sqlite3", "title": "sqlite3: DB-API interface for SQLite databases", "text": "sqlite3 connects to a database file and executes SQL statements with cursors and parameter binding."}
{"id": "datetime", "title": "datetime: basic date and time types", "text": "datetime objects hold a date and a time of day; timedelta measures durations between them."}
EOF
cat >"$work/smoke/app.yaml" <<EOF
host: 127.0.0.1
port: $port
store: embedded
search:
  default_index: smoke
EOF
"${BUILDAH[@]}" copy --chown 1000:1000 "$ctr" "$work/smoke" /data/smoke >/dev/null
out=$(in_ctr sift index --source /data/smoke/docs.jsonl --index smoke --store embedded --no-progress --quiet 2>&1)
rc=$?
result "sift index (embedded, 5 documents)" $rc "$(grep -o '"seconds": [0-9.]*' <<<"$out" || last_line "$out")"

# The server writes its PID (chroot isolation: no PID namespace, so it is this machine's PID) and execs.
in_ctr sh -c 'echo $$ > /data/smoke/server.pid; exec sift serve --config /data/smoke/app.yaml --no-ray' \
    >"$work/server.log" 2>&1 &
runner=$!
started=$(date +%s)
healthy=1
while (($(date +%s) - started < SMOKE_TIMEOUT_S)) && kill -0 "$runner" 2>/dev/null; do
    if curl -fsS "http://127.0.0.1:$port/healthz" >"$work/healthz" 2>/dev/null; then healthy=0; break; fi
    sleep 2
done
mnt=$("${BUILDAH[@]}" mount "$ctr")
server_pid=$(cat "$mnt/data/smoke/server.pid" 2>/dev/null)
"${BUILDAH[@]}" umount "$ctr" >/dev/null
result "GET /healthz" $healthy "after $(($(date +%s) - started)) s: $(cat "$work/healthz" 2>/dev/null || last_line "$(cat "$work/server.log")")"

# The HEALTHCHECK's own command (["CMD", argv...]), run in the container as the engine would.
mapfile -d '' check < <("${PODMAN[@]}" image inspect --format '{{json .Config.Healthcheck.Test}}' "$IMAGE" |
    python3 -c 'import json, sys; sys.stdout.write("".join(a + "\0" for a in json.load(sys.stdin)[1:]))')
out=$(in_ctr env SIFT_HEALTH_PORT="$port" "${check[@]}" 2>&1)
rc=$?
result "the image's HEALTHCHECK command" $rc "${out:+$(last_line "$out")}"

resp=$(curl -sS -X POST "http://127.0.0.1:$port/v1/search" -H 'content-type: application/json' \
    -d '{"query": "how do I parse command line arguments", "limit": 3}' 2>&1)
top=$(python3 -c 'import json, sys; r = json.loads(sys.argv[1]); print(r["results"][0]["id"], len(r["results"]), r["stages"])' \
    "$resp" 2>/dev/null)
[[ "$top" == argparse* ]]; result "POST /v1/search" $? "top hit, hits, stages: ${top:-$resp}"

if [[ -n "$server_pid" ]] && grep -q sift "/proc/$server_pid/cmdline" 2>/dev/null; then
    kill "$server_pid"
    for _ in $(seq 30); do [[ -e "/proc/$server_pid" ]] || break; sleep 1; done
    ! [[ -e "/proc/$server_pid" ]]; result "server stopped (PID $server_pid)" $?
else
    result "server stopped" 1 "no server PID"
fi
wait
if ((FAILS)); then echo "--- server log (tail)"; tail -n 30 "$work/server.log"; fi

echo "=== image-test: $IMAGE"
echo "$FIGURES"
printf '%s\n' "${RESULTS[@]}"
echo "SUMMARY $((${#RESULTS[@]} - FAILS)) passed, $FAILS failed"
((FAILS == 0))
