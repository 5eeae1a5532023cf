# breakglass as a container image: the wheel, installed exactly as CI installs it (tests/e2e/test_wheel.py: the
# wheel alone, no extras), on a slim Python, run as a non-root user. Not built in CI here (no container runtime on
# the build machines); tests/unit/test_container.py checks what it can without one.
#
#   docker build -t breakglass .
#   docker run --env-file .env -p 3978:3978 breakglass serve
#   docker compose up          # Redis with AOF, the bot, two workers and the scheduler (compose.yaml)

FROM python:3.11-slim AS build
WORKDIR /src
COPY . .
RUN pip install --no-cache-dir --upgrade pip \
 && pip wheel --no-cache-dir --no-deps -w /dist .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    BREAKGLASS_HOST=0.0.0.0 BREAKGLASS_PORT=3978 BREAKGLASS_DATA_DIR=/var/lib/breakglass
RUN useradd --system --uid 10001 --home-dir /var/lib/breakglass --create-home breakglass \
 && chmod 0700 /var/lib/breakglass
COPY --from=build /dist/ /tmp/dist/
RUN pip install --no-cache-dir /tmp/dist/breakglass-*.whl && rm -rf /tmp/dist
USER breakglass
WORKDIR /var/lib/breakglass
EXPOSE 3978
# /healthz is the only probe on the public listener (/readyz and /metrics are on BREAKGLASS_METRICS_PORT).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('BREAKGLASS_PORT', '3978'), timeout=4)"
ENTRYPOINT ["breakglass"]
CMD ["serve"]
