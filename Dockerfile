# syntax=docker/dockerfile:1
# Fleet's image: the same `fleet` command as pip installs, for `docker run`, compose and
# Kubernetes (docs/deploy.md).
#
#   docker build -t fleet:cpu .                                    # CPU, PyTorch + llama.cpp
#   docker build -t fleet:cuda --build-arg VARIANT=cuda .          # CUDA PyTorch and vLLM
#   docker build -t fleet:gguf --build-arg EXTRAS=llama-cpp .      # no PyTorch: GGUF models only
#
# Behind a TLS proxy, give the build your certificate authorities as a secret (never baked in):
#   docker build --secret id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt -t fleet:cpu .
#
# Layers, from the least to the most often changed: the base with its user, the dependencies
# (from pyproject.toml alone), then Fleet's own code, so that a change to the code rebuilds the
# last layer only.

ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/fleet \
    PATH=/opt/fleet/bin:$PATH
# libgomp: the OpenMP runtime the CPU engines link. uid 1000: the Kubernetes manifests'
# runAsUser and fsGroup.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1000 fleet \
    && useradd --uid 1000 --gid fleet --create-home --home-dir /home/fleet --shell /usr/sbin/nologin fleet \
    && install -d -o fleet -g fleet -m 0700 /var/lib/fleet

FROM base AS deps
# cpu: PyTorch's CPU build (from TORCH_INDEX_URL) and the engines of EXTRAS; cuda: PyTorch's
# CUDA build (PyPI's), the engines of EXTRAS and vLLM. Extras are pyproject.toml's.
ARG VARIANT=cpu
ARG EXTRAS=transformers,sentence-transformers,llama-cpp
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY pyproject.toml deploy/docker/requirements.py /build/
RUN --mount=type=secret,id=ca_bundle \
    set -eu; \
    if [ -s /run/secrets/ca_bundle ]; then \
        export PIP_CERT=/run/secrets/ca_bundle SSL_CERT_FILE=/run/secrets/ca_bundle; \
    fi; \
    case "$VARIANT" in \
        cpu) extras="$EXTRAS" ;; \
        cuda) extras="$EXTRAS,vllm" ;; \
        *) echo "VARIANT is cpu or cuda, not '$VARIANT'" >&2; exit 1 ;; \
    esac; \
    python3 -m venv "$VIRTUAL_ENV"; \
    python3 /build/requirements.py /build/pyproject.toml "$extras" > /build/requirements.txt; \
    if [ "$VARIANT" = cpu ] && grep -q '^torch' /build/requirements.txt; then \
        pip install --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION"; \
    fi; \
    pip install -r /build/requirements.txt "setuptools>=68"

FROM deps AS wheel
COPY pyproject.toml README.md /src/
COPY fleet /src/fleet
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /dist /src

FROM base AS runtime
COPY --from=deps /opt/fleet /opt/fleet
# The code layer: Fleet's wheel, read from the wheel stage without being copied into a layer.
RUN --mount=type=bind,from=wheel,source=/dist,target=/dist \
    pip install --no-deps --no-compile /dist/*.whl
# Nothing secret is in the image. API keys: FLEET_API_KEY, or users and keys in a mounted file
# (FLEET_AUTH_CONFIG); the cluster secret: FLEET_CLUSTER_SECRET, or the file cluster-secret in
# FLEET_HOME (made at the supervisor's first start, or mounted there).
ENV FLEET_HOME=/var/lib/fleet \
    FLEET_PORT=9997 \
    XDG_CACHE_HOME=/var/lib/fleet/xdg-cache
USER fleet
WORKDIR /home/fleet
# The state (fleet.db), the cluster secret, logs and the weights cache: keep it on a volume.
VOLUME ["/var/lib/fleet"]
# The API; and the actors, when started with --actor-port 9998 (a cluster across containers).
EXPOSE 9997 9998
# /status answers from the API's own loop without touching an actor. A worker container serves
# no HTTP: compose and Kubernetes give it a check of its own.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/status' % os.environ.get('FLEET_PORT', '9997'), timeout=4)"]
ENTRYPOINT ["fleet"]
# On every interface, so that the published port reaches it: without FLEET_API_KEY (or
# FLEET_AUTH_CONFIG) it refuses to start, as the CLI does on any address but loopback.
CMD ["local", "-H", "0.0.0.0"]
