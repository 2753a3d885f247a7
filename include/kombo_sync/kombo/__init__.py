"""Kombo ATS-Assessment API: models, errors, limits, client, Airflow hook and webhook signatures."""
