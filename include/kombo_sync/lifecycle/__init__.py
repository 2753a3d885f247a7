"""After the invitation: reminders to candidates who have not finished, and expiry of orders without a result
(docs/lifecycle.md). ``schedule`` holds the rules (pure), ``job`` the two jobs, ``tasks`` the Airflow entry
points of the ``kombo_lifecycle`` DAG."""

from __future__ import annotations

from kombo_sync.lifecycle.job import (
    EXPIRE_JOB,
    REMIND_JOB,
    STEP_CLAIMED,
    STEP_COMMITTED,
    STEP_RECORDED,
    STEP_REVOKED,
    STEP_SENT,
    expire_orders,
    expiry_result,
    open_orders,
    send_reminders,
)
from kombo_sync.lifecycle.schedule import LifecyclePlan, Plans, plan_for

__all__ = [
    "EXPIRE_JOB",
    "REMIND_JOB",
    "STEP_CLAIMED",
    "STEP_COMMITTED",
    "STEP_RECORDED",
    "STEP_REVOKED",
    "STEP_SENT",
    "LifecyclePlan",
    "Plans",
    "expire_orders",
    "expiry_result",
    "open_orders",
    "plan_for",
    "send_reminders",
]
