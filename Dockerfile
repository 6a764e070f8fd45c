# syntax=docker/dockerfile:1
# The one spendmeter image: `spendmeter proxy` (the sidecar), `spendmeter init` (the pod's iptables
# redirect, hence the iptables package) and `spendmeter operator`. The Python dependencies come from
# constraints.txt, the same pinned lock CI installs from, into a virtualenv copied into a slim runtime
# without build tools. It runs as the proxy's non-root UID; the init step alone is given NET_ADMIN (and
# runs as root) by the pod the operator injects.

ARG PYTHON_VERSION=3.13

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY proxy/ proxy/
COPY operator/ operator/
RUN python -m venv /opt/spendmeter \
    && /opt/spendmeter/bin/pip install --no-compile -c constraints.txt . \
    && /opt/spendmeter/bin/python -m compileall -q /opt/spendmeter/lib

FROM python:${PYTHON_VERSION}-slim-bookworm
# iptables brings iptables-save/-restore and ip6tables-save/-restore (nft and legacy back ends); the
# distribution's security updates are wanted, so its version is not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/spendmeter /opt/spendmeter
ENV PATH=/opt/spendmeter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
LABEL org.opencontainers.image.title="spendmeter" \
      org.opencontainers.image.description="Per-call cost of LLM API calls from Kubernetes pods" \
      org.opencontainers.image.source="https://github.com/spendmeter/spendmeter" \
      org.opencontainers.image.licenses="Apache-2.0"
# The proxy's UID (spendmeter_operator.options.PROXY_UID): its own traffic is not redirected.
USER 15500:15500
WORKDIR /tmp
EXPOSE 15001 9464
ENTRYPOINT ["spendmeter"]
CMD ["--help"]
