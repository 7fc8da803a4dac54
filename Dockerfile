# Production-like image: slim Python, non-root user, migrations on start,
# gunicorn with the asyncio worker (service/gunicorn_conf.py). The same image
# runs the edge: `python -m pitcrew_edge` (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HOST=0.0.0.0 PORT=8000 FLASK_APP=service PITCREW_INSTANCE_DIR=/app/instance

WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY sdk ./sdk
COPY edge ./edge
COPY service ./service
RUN pip install ./sdk ./edge . && useradd --create-home --uid 10001 pitcrew \
    && mkdir -p /app/instance && chown pitcrew /app/instance

USER pitcrew
EXPOSE 8000 8001
CMD ["sh", "-c", "flask db upgrade && exec gunicorn -c python:service.gunicorn_conf 'service:create_app()'"]
