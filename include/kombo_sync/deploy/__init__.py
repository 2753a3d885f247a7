"""Deployment helpers: the compose-file reader, one-off init steps, and local process runs of the compose file.

`python -m kombo_sync.deploy --help` lists the init steps that `docker-compose.yaml`'s `airflow-init` runs.
"""
