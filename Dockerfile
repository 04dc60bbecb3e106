# sora-bot: `sora-bot run` (HTTP on $PORT, or Socket Mode when SLACK_APP_TOKEN is set), its
# SQLite file on the /data volume unless SORA_DATABASE_URL names PostgreSQL.
#   docker build -t sora-bot .
#   docker run --env-file .env -p 3000:3000 -v sora-data:/data sora-bot
# Not built in CI (no Docker engine there): tests/test_container.py runs this file's install,
# start and health commands in a fresh virtualenv instead.

# the oldest Python that pyproject's requires-python allows, on the slim Debian image
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# a fixed uid, so a host directory mounted at /data can be given to it
RUN groupadd --system --gid 10001 sora \
    && useradd --system --uid 10001 --gid sora --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin sora

WORKDIR /app
# what the package is built from (pyproject names README.md as its readme)
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY storage ./storage
RUN pip install --no-cache-dir .

# made and owned before VOLUME: changes to a volume's folder after it are discarded
RUN mkdir /data && chown sora:sora /data
ENV SORA_DB_PATH=/data/sora-bot.db \
    PORT=3000
VOLUME /data

USER sora
EXPOSE 3000
# slim images have no curl; urlopen raises (exit 1) on anything but a 2xx
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '3000'), timeout=4)"]
CMD ["sora-bot", "run"]
