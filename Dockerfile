# syntax=docker/dockerfile:1.7
# TrigReason: one image per service, each built from that service's own dependency list (its workspace
# member's pyproject.toml, pinned by uv.lock) and started as `python -m trigreason.services.<service>`,
# configured from TRIGREASON_* variables (docs/cluster.md):
#   docker build --target gateway           -t trigreason-gateway .
#   docker build --target orchestrator      -t trigreason-orchestrator .
#   docker build --target trigger-evaluator -t trigreason-trigger-evaluator .
#   docker build --target worker            -t trigreason-worker .       # both roles: argument srm or lrm
#   docker build --target tgi-cpu           -t trigreason-tgi-cpu .      # the CPU inference server (llama.cpp)
#   docker build --target backend-sim       -t trigreason-backend-sim .  # the load simulator
#   docker build -t trigreason .                                         # cli (default): the whole package
# Every image runs as an unprivileged user (uid 10001) from a slim Python base with only the locked runtime
# dependencies of its service (no dev tools, no compiler, no uv). docs/deploy.md lists each image's packages.

ARG PYTHON_VERSION=3.11
ARG UV_VERSION=0.8.22

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# ---- workspace: uv, the workspace's manifests and its lock file (what the dependency layers depend on) --
FROM python:${PYTHON_VERSION}-slim-bookworm AS workspace
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY proto/pyproject.toml proto/
COPY services/runtime/pyproject.toml services/runtime/
COPY services/gateway/pyproject.toml services/gateway/
COPY services/orchestrator/pyproject.toml services/orchestrator/
COPY services/trigger_evaluator/pyproject.toml services/trigger_evaluator/
COPY services/worker/pyproject.toml services/worker/
COPY services/tgi_cpu/pyproject.toml services/tgi_cpu/
COPY services/backend_sim/pyproject.toml services/backend_sim/

# ---- build-<service>: `uv sync --package <member>` installs that member and its dependencies only -------
# First the third-party dependencies (a layer that changes only with the lock file), then the workspace
# members (the service, trigreason-runtime, trigreason-proto) as wheels, into /app/.venv. --reinstall-package:
# uv caches the wheels it builds from a local folder until that folder's pyproject.toml changes, so without
# it a changed source file could ship as the cached, older wheel.
FROM workspace AS build-gateway
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package trigreason-gateway
COPY proto ./proto
COPY services ./services
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package trigreason-gateway \
        --reinstall-package trigreason-gateway --reinstall-package trigreason-runtime \
        --reinstall-package trigreason-proto --reinstall-package trigreason-trigger-evaluator

FROM workspace AS build-orchestrator
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package trigreason-orchestrator
COPY proto ./proto
COPY services ./services
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package trigreason-orchestrator \
        --reinstall-package trigreason-orchestrator --reinstall-package trigreason-runtime \
        --reinstall-package trigreason-proto --reinstall-package trigreason-trigger-evaluator

FROM workspace AS build-trigger-evaluator
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package trigreason-trigger-evaluator
COPY proto ./proto
COPY services ./services
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package trigreason-trigger-evaluator \
        --reinstall-package trigreason-trigger-evaluator --reinstall-package trigreason-runtime \
        --reinstall-package trigreason-proto

FROM workspace AS build-worker
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package trigreason-worker
COPY proto ./proto
COPY services ./services
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package trigreason-worker \
        --reinstall-package trigreason-worker --reinstall-package trigreason-runtime \
        --reinstall-package trigreason-proto

FROM workspace AS build-backend-sim
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package trigreason-backend-sim
COPY proto ./proto
COPY services ./services
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package trigreason-backend-sim \
        --reinstall-package trigreason-backend-sim --reinstall-package trigreason-runtime \
        --reinstall-package trigreason-proto

# ---- build-tgi-cpu: plus llama-cpp-python (trigreason-tgi-cpu's `llama` extra), built from source -------
# [tool.uv.config-settings-package.llama-cpp-python] in the root pyproject.toml: GGML_NATIVE=OFF (native
# builds crash on CPUs with AMX), AVX/AVX2/FMA/F16C on, AVX-512 off (an AVX-512 build dies on AVX2-only
# CPUs). uv applies them. The compiler stays in this stage: the tgi-cpu image gets the venv only.
FROM workspace AS build-tgi-cpu
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
ARG CMAKE_BUILD_PARALLEL_LEVEL=4
ENV CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL}
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package trigreason-tgi-cpu --extra llama
COPY proto ./proto
COPY services ./services
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package trigreason-tgi-cpu --extra llama \
        --reinstall-package trigreason-tgi-cpu --reinstall-package trigreason-runtime \
        --reinstall-package trigreason-proto

# ---- build-cli: the user-facing package (CLI, runner, eval, embedded stack) with every member ------------
FROM workspace AS build-cli
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace
COPY README.md ./
COPY proto ./proto
COPY services ./services
COPY trigreason ./trigreason
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --reinstall-package trigreason \
        --reinstall-package trigreason-proto --reinstall-package trigreason-runtime \
        --reinstall-package trigreason-gateway --reinstall-package trigreason-orchestrator \
        --reinstall-package trigreason-trigger-evaluator --reinstall-package trigreason-worker \
        --reinstall-package trigreason-tgi-cpu --reinstall-package trigreason-backend-sim

# ---- runtime: the base of every image; no compiler, no uv, an unprivileged user ------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 trigreason \
    && useradd --system --uid 10001 --gid trigreason --create-home --home-dir /home/trigreason trigreason
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TRIGREASON_HOST=0.0.0.0
WORKDIR /home/trigreason

# ---- gateway: HTTP on TRIGREASON_PORT (8080) -------------------------------------------------------------
FROM runtime AS gateway
COPY --from=build-gateway /app/.venv /app/.venv
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["python", "-m", "trigreason.services.gateway"]

# ---- orchestrator, trigger-evaluator, worker: /metrics, /healthz, /readyz on TRIGREASON_METRICS_PORT -----
FROM runtime AS orchestrator
COPY --from=build-orchestrator /app/.venv /app/.venv
USER 10001:10001
EXPOSE 9090
ENTRYPOINT ["python", "-m", "trigreason.services.orchestrator"]

FROM runtime AS trigger-evaluator
COPY --from=build-trigger-evaluator /app/.venv /app/.venv
USER 10001:10001
EXPOSE 9090
ENTRYPOINT ["python", "-m", "trigreason.services.trigger_evaluator"]

# One image, both roles: the argument (srm or lrm; or TRIGREASON_WORKER_ROLE with no argument).
FROM runtime AS worker
COPY --from=build-worker /app/.venv /app/.venv
USER 10001:10001
EXPOSE 9090
ENTRYPOINT ["python", "-m", "trigreason.services.worker"]
CMD ["srm"]

# ---- tgi-cpu: llama.cpp needs OpenMP at run time; models are pulled into ~/.cache/trigreason/models ------
FROM runtime AS tgi-cpu
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build-tgi-cpu /app/.venv /app/.venv
ENV TRIGREASON_TGI_CPU_HOST=0.0.0.0 \
    TRIGREASON_TGI_CPU_PORT=8080 \
    TRIGREASON_TGI_CPU_MODEL=srm
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["python", "-m", "trigreason.services.tgi_cpu"]

# ---- backend-sim: TGI's protocol on TRIGREASON_SIM_PORT (8090), for benchmarks of the bus ----------------
FROM runtime AS backend-sim
COPY --from=build-backend-sim /app/.venv /app/.venv
ENV TRIGREASON_SIM_HOST=0.0.0.0 \
    TRIGREASON_SIM_PORT=8090
USER 10001:10001
EXPOSE 8090
ENTRYPOINT ["python", "-m", "trigreason.services.backend_sim"]

# ---- cli (default): `trigreason ...` (serve, solve, eval, up) with every service but llama.cpp ------------
FROM runtime AS cli
COPY --from=build-cli /app/.venv /app/.venv
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["trigreason"]
CMD ["--help"]
