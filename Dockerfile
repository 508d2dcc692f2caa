# syntax=docker/dockerfile:1
# Patron API image. Installs through the same Makefile target and lock file as CI.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
RUN apt-get update \
    && apt-get install -y --no-install-recommends make=4.3-4.1 \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml requirements.lock README.md Makefile ./
COPY patron ./patron
COPY features ./features
COPY training ./training
COPY serving ./serving
RUN make install-prod VENV=/opt/venv PYTHON=python3.11

FROM python:3.11-slim-bookworm AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1=12.2.0-14+deb12u1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 patron
COPY --from=build /opt/venv /opt/venv
COPY config /app/config
WORKDIR /app
ENV PATH="/opt/venv/bin:${PATH}" \
    OPENBLAS_NUM_THREADS=1 \
    OMP_NUM_THREADS=1 \
    PYTHONUNBUFFERED=1 \
    PATRON_WORK_DIR=/app/var \
    PATRON_RULES_FILE=/app/config/rules.yaml \
    NUMBA_CACHE_DIR=/app/numba-cache
RUN mkdir -p /app/var /app/numba-cache && chown patron:patron /app/var /app/numba-cache
USER 10001:10001
# compile the numba kernels (rules, scoring) into the image: workers start from the cache
RUN python -c "from serving.rules.engine import warm_up; from patron.scoring.kernel import warm_up as s; warm_up(); s()"
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"]
CMD ["patron", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
