"""The data team's console in the Airflow UI (issue 11): queries over the state store, the FastAPI app the
plugin mounts, Airflow login and permission checks, and the repairs (write-back DAG runs). See docs/console.md."""
