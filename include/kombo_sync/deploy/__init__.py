"""Deployment helpers: the one-off init steps of a deployment (`bootstrap`).

`python -m kombo_sync.deploy --help` lists the init steps that `docker-compose.yaml`'s `airflow-init` runs.
"""
