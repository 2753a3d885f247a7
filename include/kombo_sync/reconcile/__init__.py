"""Reconcile: invited orders checked with Kombo; what left OPEN without us is cancelled and its invitation
revoked, results Kombo holds but the outbox does not know are recorded sent.

``decide`` holds the rule for one order (pure), ``scan`` the state store reads, ``job`` the job
(``reconcile_orders``), ``tasks`` the Airflow entry points of the DAG ``kombo_reconcile``. See docs/lifecycle.md.
"""

from __future__ import annotations

from kombo_sync.reconcile.decide import OUTCOMES, Decision, ResultVersion, decide
from kombo_sync.reconcile.job import JOB, STEP_RECORDED, STEP_REVOKED, reconcile_orders

__all__ = [
    "JOB",
    "OUTCOMES",
    "STEP_RECORDED",
    "STEP_REVOKED",
    "Decision",
    "ResultVersion",
    "decide",
    "reconcile_orders",
]
