# syntax=docker/dockerfile:1.7
# TrigReason: one image, one entry point per service (`trigreason serve SERVICE`).
#   docker build -t trigreason .                       # the services (default target)
#   docker build -t trigreason-cpu --target cpu .      # plus the CPU inference server (llama.cpp)
# Both run as an unprivileged user (uid 10001) from a slim Python base with only the locked runtime
# dependencies (uv.lock, no dev tools).

ARG PYTHON_VERSION=3.11
ARG UV_VERSION=0.8.22

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# ---- build: the project and its locked dependencies in /app/.venv ------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Dependencies first (a layer that changes only with uv.lock), then the project itself, as a wheel.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project
COPY README.md ./
COPY trigreason ./trigreason
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# ---- build-cpu: plus llama-cpp-python, built as pyproject.toml says ----------------------------------
# [tool.uv.config-settings-package.llama-cpp-python]: GGML_NATIVE=OFF (native builds crash on CPUs with
# AMX), AVX/AVX2/FMA/F16C on, AVX-512 off (an AVX-512 build dies on AVX2-only CPUs). uv applies them.
FROM build AS build-cpu
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
ARG CMAKE_BUILD_PARALLEL_LEVEL=4
ENV CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL}
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --extra cpu

# ---- runtime base: no compiler, no uv, an unprivileged user -------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 trigreason \
    && useradd --system --uid 10001 --gid trigreason --create-home --home-dir /home/trigreason trigreason
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TRIGREASON_HOST=0.0.0.0
WORKDIR /home/trigreason
ENTRYPOINT ["trigreason"]

# ---- cpu: the services and `trigreason serve tgi-cpu` (models are pulled into ~/.cache/trigreason) ----
FROM runtime AS cpu
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build-cpu /app/.venv /app/.venv
USER 10001:10001
EXPOSE 8080
CMD ["serve", "tgi-cpu", "--model", "srm", "--host", "0.0.0.0", "--port", "8080"]

# ---- services (default): gateway, orchestrator, trigger-evaluator, srm-worker, lrm-worker -------------
FROM runtime AS services
COPY --from=build /app/.venv /app/.venv
USER 10001:10001
# The gateway's HTTP port; the other services serve /metrics, /healthz, /readyz on TRIGREASON_METRICS_PORT.
EXPOSE 8080 9090
CMD ["serve", "gateway"]
