#!/bin/sh
# One-shot MinIO set-up of the coordinating centre (the minio-init service); safe to run again.
#
#   buckets   fedmap (the federations' exchange, storage.bucket) and mlflow (MLflow's artifacts)
#   users     $FEDMAP_CENTRE_ACCESS_KEY (Airflow's centre tasks) and $MLFLOW_S3_ACCESS_KEY (MLflow)
#   policies  fedmap-centre, fedmap-mlflow, and fedmap-site-<site> for every sites/<site>.json
#             (rendered with infra/site/policy.py), attached to the MinIO user <site> when it exists
#
# The alias "centre" comes from $MC_HOST_centre (http://ROOT_USER:ROOT_PASSWORD@minio:9000).
set -eu
here=/minio-init

attach() { # policy user
    mc admin policy attach centre "$1" --user "$2" >/dev/null 2>&1 \
        || echo "policy $1 was already attached to $2"
}

mc mb --ignore-existing centre/fedmap centre/mlflow

mc admin policy create centre fedmap-centre "$here/centre-policy.json"
mc admin policy create centre fedmap-mlflow "$here/mlflow-policy.json"
mc admin user add centre "$FEDMAP_CENTRE_ACCESS_KEY" "$FEDMAP_CENTRE_SECRET_KEY"
mc admin user add centre "$MLFLOW_S3_ACCESS_KEY" "$MLFLOW_S3_SECRET_KEY"
attach fedmap-centre "$FEDMAP_CENTRE_ACCESS_KEY"
attach fedmap-mlflow "$MLFLOW_S3_ACCESS_KEY"

for file in "$here"/sites/*.json; do
    [ -e "$file" ] || continue
    site=${file##*/}
    site=${site%.json}
    mc admin policy create centre "fedmap-site-$site" "$file"
    if mc admin user info centre "$site" >/dev/null 2>&1; then
        attach "fedmap-site-$site" "$site"
    else
        echo "fedmap-site-$site is ready; no MinIO user $site yet (see infra/centre/README.md)"
    fi
done
echo "MinIO is set up"
