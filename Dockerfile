# The idcode issuance service. docker-compose.yml runs it with PostgreSQL and Redis.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what the package needs; .dockerignore keeps keys, data and caches out of the context.
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY idcode ./idcode
COPY adapters ./adapters
# The service's extra, at the versions the tests ran with (constraints.txt).
RUN pip install -c constraints.txt '.[service]' && rm -rf build

# An unprivileged user owns the key store (0700: idcode refuses a key directory others can
# write to). A named volume mounted on /app/keys starts with this owner and mode.
RUN useradd --system --uid 10001 --home-dir /app idcode \
    && mkdir -p /app/keys /app/data \
    && chown idcode:idcode /app/keys /app/data \
    && chmod 0700 /app/keys
USER idcode

ENV IDCODE_KEYS_DIR=/app/keys \
    IDCODE_DATA_DIR=/app/data \
    IDCODE_PORT=8000

EXPOSE 8000

# Healthy when it can serve: /readyz checks the database (reachable, migrated) and that a key
# may sign now (docker-compose.yml's health check is the same).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=3)"]

# exec: uvicorn gets SIGTERM from 'docker stop' directly and shuts down gracefully. Run on its
# own, the container migrates first; replicas doing so together wait for each other (db
# upgrade holds a PostgreSQL advisory lock). docker-compose.yml migrates in a one-shot
# service instead and runs `idcode serve` only.
CMD ["sh", "-c", "idcode db upgrade && exec idcode serve --host 0.0.0.0"]
