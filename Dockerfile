# One image for every ABAXUS function; the Knative Service picks one with FUNCTION_TARGET.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
# WeasyPrint (invoice PDFs) lays text out with Pango and subsets fonts with HarfBuzz; the
# slim image has neither, nor a font.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY core ./core
COPY functions ./functions
COPY migrations ./migrations
COPY knative ./knative
RUN pip install . && useradd --uid 10001 --no-create-home abaxus
USER 10001
EXPOSE 8080
# functions-framework serves FUNCTION_TARGET on $PORT with gunicorn (WORKERS x THREADS);
# ingest is an ASGI function, which it serves with uvicorn workers (uvloop, httptools).
CMD ["functions-framework", "--source=functions/main.py"]
