# eci-datacache-operator image: `docker build -t eci-datacache-operator .`
# Stage 1 builds the wheel; stage 2 installs only that wheel (and its pure runtime
# dependencies) into a virtualenv on a slim base: no compilers, no sources, no build tools.
# tests/unit/test_dockerfile.py lints this file and runs its RUN steps in a clean venv;
# tests/e2e/ runs the built image under a real kubelet.
#
# BASE_IMAGE: any image with python (3.11+) and its venv module on PATH; `make image` builds one
# from Debian packages where no container registry can be reached (tests/e2e/images/base.sh).
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WHEELS=/wheels
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir "${WHEELS}" .

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="eci-datacache-operator" \
      org.opencontainers.image.description="Kubernetes operator for Alibaba Cloud ECI data caches" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    WHEELS=/wheels \
    VENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
COPY --from=build /wheels /wheels
RUN python -m venv "${VENV}" \
    && "${VENV}/bin/pip" install --no-cache-dir "${WHEELS}"/eci_datacache_operator-*.whl \
    && rm -rf "${WHEELS}"
# A numeric non-root user (the chart's securityContext runs as the same id).
USER 65532:65532
# 8080: Prometheus metrics; 8081: /healthz; 9443: the pod admission webhook (TLS).
EXPOSE 8080 8081 9443
ENTRYPOINT ["datacache-operator", "run"]
