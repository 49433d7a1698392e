# syntax=docker/dockerfile:1
#
# One image for the operator and the workers (different commands):
#   operator:  python -m curation_operator
#   workers:   thresher worker --spec ... --step ... --rank N --world-size W   (set by the operator)
#
#   docker build -t thresher:0.1.0 .                          # GPU image (CUDA 12.8 runtime, faiss-gpu)
#   docker build --build-arg VARIANT=cpu -t thresher:0.1.0-cpu .   # CPU image (faiss-cpu, CPU torch)
#
# Why these versions agree: faiss-gpu 1.15.1 on PyPI is built for CUDA 12 (it pulls the
# nvidia-*-cu12 runtime wheels), and torch 2.10 is the last release whose default PyPI wheel is
# built for CUDA 12 (12.8; from 2.11 on it is CUDA 13). So the GPU image pins torch 2.10.0, and
# its base is the CUDA 12.8 runtime, whose driver requirement (>= 570) is what the nodes need.
# No model weights are baked in: models come from the models PVC (see docs/air-gapped.md).
# For builds behind a proxy or mirror, pass --build-arg PIP_INDEX_URL=https://pypi.mirror/simple.
# The CPU image takes torch's CPU-only wheel from TORCH_CPU_INDEX_URL (PyTorch's index); with only a
# PyPI mirror, pass --build-arg TORCH_CPU_INDEX_URL=<the mirror> (PyPI's torch: larger, same code).

ARG VARIANT=gpu
ARG CUDA_BASE_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
ARG CPU_BASE_IMAGE=ubuntu:24.04

# ---------------------------------------------------------------- the two bases
FROM ${CUDA_BASE_IMAGE} AS base-gpu
ENV THRESHER_IMAGE_VARIANT=gpu \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

FROM ${CPU_BASE_IMAGE} AS base-cpu
ENV THRESHER_IMAGE_VARIANT=cpu

# ---------------------------------------------------------------- common runtime layer
# DL3006: `base-gpu`/`base-cpu` are the stages above, not registry images.
# hadolint ignore=DL3006
FROM base-${VARIANT} AS base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Python 3.12 from Ubuntu 24.04 (both bases), the same interpreter in build and runtime stages so
# the virtual environment can be copied. libgomp1: OpenMP for faiss and torch on CPU.
# DL3008: the packages follow the pinned base image's Ubuntu release; exact Debian versions would
# break the build whenever the archive moves on.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libgomp1 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && (userdel --remove ubuntu 2>/dev/null || true) \
 && groupadd --gid 1000 thresher \
 && useradd --uid 1000 --gid 1000 --home-dir /home/thresher --create-home --shell /usr/sbin/nologin thresher

# ---------------------------------------------------------------- build the wheel and the venv
FROM base AS build
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv python3-pip \
 && rm -rf /var/lib/apt/lists/*
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG TORCH_VERSION=2.10.0
ARG FAISS_GPU_VERSION=1.15.1
ARG TORCH_CPU_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_INDEX_URL=${PIP_INDEX_URL}
WORKDIR /src
COPY pyproject.toml README.md ./
COPY curation ./curation
COPY operator ./operator
RUN python3 -m venv /opt/thresher \
 && /opt/thresher/bin/pip wheel --no-deps --wheel-dir /dist . \
 && wheel="$(ls /dist/thresher-*.whl)" \
 && if [ "${THRESHER_IMAGE_VARIANT}" = gpu ]; then \
      /opt/thresher/bin/pip install "torch==${TORCH_VERSION}" "faiss-gpu==${FAISS_GPU_VERSION}" \
        "${wheel}[gpu,operator]"; \
    else \
      /opt/thresher/bin/pip install --extra-index-url "${TORCH_CPU_INDEX_URL}" "torch==${TORCH_VERSION}" \
        "${wheel}[models,operator]"; \
    fi \
 && /opt/thresher/bin/thresher --help >/dev/null \
 && /opt/thresher/bin/python -c "import curation_operator, torch, importlib.util as u; assert u.find_spec('faiss')"

# ---------------------------------------------------------------- the image
FROM base AS runtime
COPY --from=build /opt/thresher /opt/thresher
# Offline by default: models come from the models PVC, never from a hub. Caches and HOME go to /tmp
# (an emptyDir in the pods) because the root filesystem is read-only.
ENV PATH=/opt/thresher/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HOME=/tmp/huggingface \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/tmp
WORKDIR /tmp
USER 1000:1000
# 8000: operator /metrics, 8080: operator /healthz, 9400: worker /metrics
EXPOSE 8000 8080 9400
CMD ["thresher", "--help"]
