# syntax=docker/dockerfile:1
# A hospital's edge worker: it pulls the site's tasks (validate, train, evaluate, fine-tune, score)
# from the coordinating centre over HTTPS and runs them here, next to the data, on the GPU.
# Built by compose.yaml with the repository root as context (edge-worker.Dockerfile.dockerignore
# says what is sent), from the same release as the centre: Airflow, edge3 and platform versions
# must match the centre's exactly.
FROM python:3.11-slim-bookworm

# The CUDA build of torch. Its wheels carry the CUDA runtime; the host needs only the NVIDIA
# driver and the NVIDIA Container Toolkit. Pick the index that matches the driver (pytorch.org).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG FEDMAP_CODE_VERSION=unknown

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

RUN useradd --uid 50000 --gid 0 --create-home --home-dir /home/fedmap fedmap \
    && install -d -o fedmap -g 0 /opt/airflow /opt/fedmap /opt/fedmap/federations \
        /var/lib/fedmap /etc/fedmap/certs

RUN pip install "torch==2.13.0" --index-url "${TORCH_INDEX_URL}"

COPY --chown=fedmap:0 pyproject.toml README.md /opt/fedmap/
COPY --chown=fedmap:0 fedmap /opt/fedmap/fedmap
COPY --chown=fedmap:0 site_tasks /opt/fedmap/site_tasks
COPY --chown=fedmap:0 expectations /opt/fedmap/expectations
COPY --chown=fedmap:0 dags /opt/fedmap/dags

# Editable, so site_tasks finds expectations/ and fedmap/ beside it as in a checkout. The worker
# parses dags/fedmap_federation.py itself to run a task, so it holds the same DAG file.
RUN pip install \
        "apache-airflow==3.3.2" \
        "apache-airflow-providers-edge3==5.1.0" \
        --editable /opt/fedmap

# Paths as at the centre (the DAG hands each task the federation file's path there); the state
# folder is the federation file's state_dir.
ENV AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/fedmap/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    FEDMAP_FEDERATIONS_DIR=/opt/fedmap/federations \
    FEDMAP_CODE_VERSION=${FEDMAP_CODE_VERSION} \
    MLFLOW_DISABLE_TELEMETRY=true \
    GX_ANALYTICS_ENABLED=false \
    MPLCONFIGDIR=/tmp/matplotlib \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

USER 50000
WORKDIR /opt/airflow

# One task at a time by default: one GPU. FEDMAP_QUEUE is the site's queue in the federation file.
ENTRYPOINT ["/bin/sh", "-c", "exec airflow edge worker --queues \"${FEDMAP_QUEUE:?set FEDMAP_QUEUE}\" --edge-hostname \"${FEDMAP_SITE:?set FEDMAP_SITE}\" --concurrency \"${FEDMAP_WORKER_CONCURRENCY:-1}\""]
