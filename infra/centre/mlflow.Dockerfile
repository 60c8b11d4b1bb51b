# syntax=docker/dockerfile:1
# MLflow's tracking server and model registry for the coordinating centre: runs and registered
# models in PostgreSQL, artifacts in MinIO (proxied by the server, so clients need no S3 key).
# The version is the one the platform logs with (pyproject.toml).
FROM python:3.11-slim-bookworm

RUN pip install --no-cache-dir \
        "mlflow==3.17.2" \
        "psycopg2-binary>=2.9,<3" \
        "boto3>=1.35,<1.44" \
    && useradd --uid 10001 --create-home mlflow

USER mlflow
EXPOSE 5000
ENV MLFLOW_DISABLE_TELEMETRY=true
