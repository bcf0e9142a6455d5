#!/usr/bin/env bash
# Build Sift's container image (`make image`; docs/operating/image.md).
#
# Settings (environment):
#   IMAGE          tag to build (default sift:<pyproject version>, or sift:<version>-cuda for TORCH_VARIANT=cuda: the
#                  tags the k8s manifests name).
#   IMAGE_BASE     base image of both stages (default debian:bookworm-slim). `local`: a Debian 12 base made on this
#                  machine with mmdebstrap and imported as localhost/debian:bookworm-slim (for machines that reach
#                  Debian's mirrors and PyPI but no container registry).
#   TORCH_VARIANT  cpu (torch's CPU-only wheel from TORCH_CPU_INDEX) or cuda (PyPI's default wheel, CUDA inside).
#   TORCH_CPU_INDEX  where the cpu variant's torch comes from (default https://download.pytorch.org/whl/cpu).
#   CONTAINER_ENGINE docker or podman (default: docker if installed, else podman).
#   PODMAN_STORAGE_DRIVER  podman's storage driver (default vfs: works in any rootful sandbox, copies every layer).
# Prints the build time and the image size; exits non-zero if the build fails.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
TORCH_VARIANT=${TORCH_VARIANT:-cpu}
if [[ -z "${IMAGE:-}" ]]; then
    IMAGE=sift:$VERSION
    [[ "$TORCH_VARIANT" == cuda ]] && IMAGE+=-cuda
fi
IMAGE_BASE=${IMAGE_BASE:-debian:bookworm-slim}
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
LOCAL_BASE=localhost/debian:bookworm-slim
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

if [[ -z "${CONTAINER_ENGINE:-}" ]]; then
    if command -v docker >/dev/null; then CONTAINER_ENGINE=docker; else CONTAINER_ENGINE=podman; fi
fi
command -v "$CONTAINER_ENGINE" >/dev/null || { echo "error: $CONTAINER_ENGINE is not installed" >&2; exit 1; }
engine=("$CONTAINER_ENGINE")
build_opts=()
if [[ "$CONTAINER_ENGINE" == podman ]]; then
    engine+=(--storage-driver "${PODMAN_STORAGE_DRIVER:-vfs}")
    # chroot isolation and the host's network work where a sandbox forbids nested namespaces; docker format keeps
    # the HEALTHCHECK (OCI images drop it); one layer per stage keeps vfs from copying the tree once per step.
    build_opts+=(--isolation chroot --network host --format docker --layers=false)
    # pip inside the build trusts what this machine trusts (some networks re-sign TLS); never baked into the image.
    [[ -s "$CA_BUNDLE" ]] && build_opts+=(-v "$CA_BUNDLE:$CA_BUNDLE:ro")
fi

if [[ "$IMAGE_BASE" == local ]]; then
    IMAGE_BASE=$LOCAL_BASE
    if ! "${engine[@]}" image exists "$LOCAL_BASE" 2>/dev/null; then
        command -v mmdebstrap >/dev/null || { echo "error: IMAGE_BASE=local needs mmdebstrap" >&2; exit 1; }
        tmp=$(mktemp -d)
        trap 'rm -rf "$tmp"' EXIT
        echo "making $LOCAL_BASE with mmdebstrap (Debian 12 minbase + python3)"
        mmdebstrap --quiet --variant=minbase --include=ca-certificates,python3,python3-venv bookworm "$tmp/rootfs.tar"
        "${engine[@]}" import "$tmp/rootfs.tar" "$LOCAL_BASE" >/dev/null
    fi
fi

echo "building $IMAGE (base $IMAGE_BASE, torch $TORCH_VARIANT) with $CONTAINER_ENGINE"
start=$(date +%s)
"${engine[@]}" build "${build_opts[@]}" \
    --build-arg "BASE=$IMAGE_BASE" --build-arg "TORCH_VARIANT=$TORCH_VARIANT" \
    --build-arg "TORCH_CPU_INDEX=$TORCH_CPU_INDEX" --build-arg "VERSION=$VERSION" \
    -t "$IMAGE" .
build_s=$(($(date +%s) - start))
size=$("${engine[@]}" image inspect --format '{{.Size}}' "$IMAGE")
echo "FIGURE build_seconds=$build_s"
echo "FIGURE image_size_bytes=$size ($(awk -v b="$size" 'BEGIN { printf "%.2f GB", b / 1e9 }'))"
