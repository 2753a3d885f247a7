"""Housekeeping: candidate personal data kept only as long as needed (retention), and erased on request."""
