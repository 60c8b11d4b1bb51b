# syntax=docker/dockerfile:1
# The coordinating centre's Airflow image: API server, scheduler (which also runs the centre's own
# tasks with LocalExecutor: start, aggregate, register, release), DAG processor and triggerer.
# Built by compose.yaml with the repository root as context (airflow.Dockerfile.dockerignore says
# what is sent). Every site's edge worker must run the same Airflow, edge3 and platform versions.
FROM apache/airflow:3.3.2-python3.11

# The centre aggregates and registers, it never trains at scale: the CPU build of torch suffices.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG FEDMAP_CODE_VERSION=unknown

USER root
RUN install -d -o airflow -g 0 /opt/fedmap /opt/fedmap/federations
USER airflow

RUN pip install --no-cache-dir "torch==2.13.0" --index-url "${TORCH_INDEX_URL}"

COPY --chown=airflow:0 pyproject.toml README.md /opt/fedmap/
COPY --chown=airflow:0 fedmap /opt/fedmap/fedmap
COPY --chown=airflow:0 site_tasks /opt/fedmap/site_tasks
COPY --chown=airflow:0 expectations /opt/fedmap/expectations
COPY --chown=airflow:0 dags /opt/fedmap/dags

# Editable, so site_tasks finds expectations/ and fedmap/ beside it as in a checkout. Airflow is
# named in the same command so that pip keeps the image's own version.
RUN pip install --no-cache-dir \
        "apache-airflow==3.3.2" \
        "apache-airflow-providers-edge3==5.1.0" \
        "apache-airflow-providers-amazon==9.39.0" \
        --editable /opt/fedmap

# The cluster policy that sends site tasks to the edge workers ($AIRFLOW_HOME/config is on sys.path).
COPY --chown=airflow:0 infra/centre/airflow_local_settings.py /opt/airflow/config/airflow_local_settings.py

ENV FEDMAP_CODE_VERSION=${FEDMAP_CODE_VERSION} \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/fedmap/dags \
    FEDMAP_FEDERATIONS_DIR=/opt/fedmap/federations \
    MLFLOW_DISABLE_TELEMETRY=true \
    GX_ANALYTICS_ENABLED=false
