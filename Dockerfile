# Astro Runtime 3.3 ships Apache Airflow 3.3 on Python 3.12; `astro dev start` and `astro deploy` build this,
# and docker-compose.yaml builds it too. Project packages come from requirements.txt (pinned by constraints.txt).
FROM astrocrpublic.azurecr.io/runtime:3.3-2

# The pipeline's own code lives in include/kombo_sync; the sandbox (local trials only) at the project root.
ENV PYTHONPATH="/usr/local/airflow/include:/usr/local/airflow:${PYTHONPATH}"
