# syntax=docker/dockerfile:1
# Sovereign node agent (`sovereign-agent`, agents/pyproject.toml): only the agent package,
# PyYAML, prometheus-client and nvidia-ml-py (NVML). Nothing of the control plane.
#
#   docker build -f docker/agent.Dockerfile -t sovereign-agent .   (context: the repository root)
#
# The Helm chart runs it as a DaemonSet with `run`; docker-compose.yml runs `simulate`.

# The same official base as docker/Dockerfile, pinned by the same digest.
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

# -- build: the agent and its dependencies, from binary wheels only, in a virtualenv ------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/sovereign-agent

WORKDIR /src
# agents/ is the package itself (package-dir = "."); constraints.txt pins its dependencies.
COPY constraints.txt ./
COPY agents ./agents
RUN /opt/sovereign-agent/bin/pip install --only-binary=:all: -c constraints.txt './agents[nvml]'

# -- runtime: the virtual environment and nothing else -----------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ENV PATH=/opt/sovereign-agent/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# uid 10001, as in the control-plane image, so both can share a volume (docker-compose.yml).
# The Helm chart runs the agent as uid 0 with every capability dropped, to read the
# root-only DMI serial (agent.runAsRoot); the image itself never needs root.
RUN groupadd --system --gid 10001 sovereign \
    && useradd --system --uid 10001 --gid sovereign --no-create-home \
        --shell /usr/sbin/nologin sovereign \
    && install -d -o sovereign -g sovereign -m 0700 /var/lib/sovereign-agent

COPY --from=build /opt/sovereign-agent /opt/sovereign-agent

USER sovereign:sovereign

# Prometheus metrics (docs/agent.md).
EXPOSE 9402

ENTRYPOINT ["sovereign-agent"]
CMD ["run"]
