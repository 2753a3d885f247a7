"""The dependency audit's verdict (tests/support/audit.py) on pip-audit reports: a fixable vulnerability fails, a
run that audited nothing is reported NOT PERFORMED and is never a pass."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.support import audit
from tests.support.audit import format_outcome, parse_report

VULNERABLE = {
    "dependencies": [
        {"name": "jinja2", "version": "3.1.2", "vulns": [
            {"id": "GHSA-h5c8-rqwp-cp95", "fix_versions": ["3.1.3"], "aliases": ["CVE-2024-22195"],
             "description": "The xmlattr filter accepts keys containing spaces."}]},
        {"name": "somelib", "version": "1.0", "vulns": [
            {"id": "PYSEC-0000-1", "fix_versions": [], "aliases": [], "description": "No fix yet."}]},
        {"name": "requests", "version": "2.34.2", "vulns": []},
    ],
    "fixes": [],
}  # fmt: skip
UNREACHABLE = {
    "dependencies": [
        {"name": "requests", "skip_reason": "Dependency not found on PyPI and could not be audited: requests (2.34.2)"},
        {"name": "httpx", "skip_reason": "Dependency not found on PyPI and could not be audited: httpx (0.28.1)"},
    ],
    "fixes": [],
}  # fmt: skip


def test_a_vulnerability_with_a_fix_fails_and_one_without_is_listed():
    outcome = parse_report(VULNERABLE)
    assert outcome.performed and outcome.audited == 3
    assert outcome.exit_code(required=False) == 1
    text = format_outcome(outcome, requirements=Path("constraints.txt"), service="pypi", required=False)
    assert "GHSA-h5c8-rqwp-cp95, CVE-2024-22195 (fixed in: 3.1.3)" in text and "xmlattr" in text
    assert "FAILED: 1 known vulnerability" in text
    assert "somelib 1.0: PYSEC-0000-1 (fixed in: none)" in text


def test_nothing_audited_is_not_performed_never_a_pass():
    outcome = parse_report(UNREACHABLE)
    assert not outcome.performed and outcome.skipped
    text = format_outcome(outcome, requirements=Path("constraints.txt"), service="pypi", required=False)
    assert "DEPENDENCY AUDIT NOT PERFORMED" in text and "no known vulnerability" not in text
    assert outcome.exit_code(required=False) == 0  # a loud warning where no database is reachable
    assert outcome.exit_code(required=True) == 1


def test_partly_audited_lists_what_was_skipped():
    report = {"dependencies": VULNERABLE["dependencies"][2:] + UNREACHABLE["dependencies"][:1]}
    outcome = parse_report(report)
    text = format_outcome(outcome, requirements=Path("constraints.txt"), service="pypi", required=True)
    assert (
        outcome.performed and "1 package(s) NOT audited" in text and "requests: Dependency not found" in text
    )
    assert outcome.exit_code(required=False) == 0 and outcome.exit_code(required=True) == 1


def test_pip_audit_crashing_or_unreachable_is_not_performed(tmp_path, monkeypatch, capsys):
    """The real command line, with pip-audit replaced by a script that fails as it does when its service cannot
    be resolved (a traceback, no report)."""
    fake = tmp_path / "pip_audit.py"
    fake.write_text(
        "import sys\nprint('requests.exceptions.ConnectionError: api.osv.dev unreachable', file=sys.stderr)\n"
        "sys.exit(1)\n"
    )
    monkeypatch.setattr(audit, "PIP_AUDIT", [sys.executable, str(fake)])
    monkeypatch.setenv("KOMBO_AUDIT_REQUIRED", "true")
    requirements = tmp_path / "req.txt"
    requirements.write_text("requests==2.34.2\n")
    assert audit.main(["-r", str(requirements), "--service", "osv"]) == 1
    err = capsys.readouterr().err
    assert "NOT PERFORMED" in err and "api.osv.dev unreachable" in err

    monkeypatch.setenv("KOMBO_AUDIT_REQUIRED", "")
    fake.write_text(f"print({json.dumps(json.dumps(VULNERABLE))})\n")
    assert audit.main(["-r", str(requirements)]) == 1
    assert "GHSA-h5c8-rqwp-cp95" in capsys.readouterr().err
