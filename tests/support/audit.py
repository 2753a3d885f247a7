"""The dependency audit behind `make audit`: pip-audit over the pinned `constraints.txt`, read and judged here.

    python -m tests.support.audit                      # `make audit` (run at the end of `make test`)
    python -m tests.support.audit --service osv        # pip-audit's other vulnerability service

pip-audit runs with ``--no-deps --disable-pip`` (the pins are the whole set, nothing is resolved or installed) and
``--format json``; this module then decides:

- a vulnerability with a fix version: **failure** (exit 1), listed with its id, the fix and the description;
- a vulnerability without a fix: listed, not a failure (nothing to upgrade to);
- packages the service could not audit (pip-audit's ``skip_reason``; e.g. PyPI answering 404 for each
  ``/pypi/NAME/VERSION/json``, as it does on a machine with no route to the vulnerability data): listed, and when
  nothing at all was audited, or pip-audit could not reach its service, the report says in capitals that the
  audit was NOT PERFORMED. That is a failure when ``KOMBO_AUDIT_REQUIRED`` is true, else a loud warning (exit 0):
  a machine without a route to any vulnerability database cannot audit, and `make test` should still test. A
  pip-audit run that passes because it skipped everything is never reported as a pass.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TRUE_VALUES = ("1", "true", "yes", "on")
PIP_AUDIT = [sys.executable, "-m", "pip_audit"]


@dataclass
class AuditOutcome:
    """What one pip-audit run found: vulnerabilities (fixable or not), packages not audited, and whether the
    run reached its service at all."""

    audited: int = 0
    fixable: list[str] = field(default_factory=list)
    unfixable: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def performed(self) -> bool:
        return self.error is None and self.audited > 0

    def exit_code(self, *, required: bool) -> int:
        if self.fixable:
            return 1
        if required and (not self.performed or self.skipped):
            return 1
        return 0


def _describe(name: str, version: str, vuln: dict[str, Any]) -> str:
    ids = ", ".join([str(vuln.get("id")), *map(str, vuln.get("aliases") or [])])
    fixes = ", ".join(map(str, vuln.get("fix_versions") or [])) or "none"
    text = f"{name} {version}: {ids} (fixed in: {fixes})"
    description = " ".join(str(vuln.get("description") or "").split())
    return f"{text}\n      {description[:400]}" if description else text


def parse_report(report: dict[str, Any]) -> AuditOutcome:
    """Judge pip-audit's JSON report (``--format json``)."""
    outcome = AuditOutcome()
    for dependency in report.get("dependencies") or []:
        name, version = str(dependency.get("name")), str(dependency.get("version", ""))
        if dependency.get("skip_reason"):
            outcome.skipped.append(f"{name}: {dependency['skip_reason']}")
            continue
        outcome.audited += 1
        for vuln in dependency.get("vulns") or []:
            target = outcome.fixable if vuln.get("fix_versions") else outcome.unfixable
            target.append(_describe(name, version, vuln))
    return outcome


def run_pip_audit(requirements: Path, service: str, timeout: float) -> AuditOutcome:
    """Run pip-audit on ``requirements`` and judge its report; a crash or an unreachable service is an error."""
    command = [*PIP_AUDIT, "-r", str(requirements), "--no-deps", "--disable-pip",
               "--progress-spinner", "off", "--desc", "on", "--format", "json", "--vulnerability-service",
               service]  # fmt: skip
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except FileNotFoundError as exc:
        return AuditOutcome(error=f"pip-audit could not be started: {exc}")
    except subprocess.TimeoutExpired:
        return AuditOutcome(error=f"pip-audit did not finish within {timeout:.0f} s")
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return AuditOutcome(error=f"pip-audit exited {proc.returncode} without a report: {last[:300]}")
    return parse_report(report)


def format_outcome(outcome: AuditOutcome, *, requirements: Path, service: str, required: bool) -> str:
    lines = [f"Dependency audit of {requirements.name} (pip-audit, service {service})"]
    if not outcome.performed:
        reason = outcome.error or f"the service audited none of the {len(outcome.skipped)} packages"
        lines += [
            "",
            "*** DEPENDENCY AUDIT NOT PERFORMED ***",
            f"    {reason}",
            "    No vulnerability database was reached: this is not a pass. Run `make audit` on a machine that",
            "    reaches https://pypi.org/pypi/NAME/VERSION/json (or api.osv.dev, with AUDIT_SERVICE=osv).",
            "    " + ("KOMBO_AUDIT_REQUIRED is set: this is a failure."
                      if required else "A warning only (set KOMBO_AUDIT_REQUIRED=true to make it a failure)."),
        ]  # fmt: skip
        if outcome.skipped:
            lines.append(f"    first packages not audited: {'; '.join(outcome.skipped[:3])}")
        return "\n".join(lines) + "\n"
    lines.append(f"{outcome.audited} package(s) audited, {len(outcome.skipped)} not audited")
    if outcome.fixable:
        lines.append(f"FAILED: {len(outcome.fixable)} known vulnerability(ies) with a fix available:")
        lines += [f"  - {item}" for item in outcome.fixable]
    if outcome.unfixable:
        lines.append(f"{len(outcome.unfixable)} known vulnerability(ies) without a fix yet (not a failure):")
        lines += [f"  - {item}" for item in outcome.unfixable]
    if outcome.skipped:
        verdict = "a failure (KOMBO_AUDIT_REQUIRED)" if required else "a warning"
        lines.append(f"WARNING: {len(outcome.skipped)} package(s) NOT audited ({verdict}):")
        lines += [f"  - {item}" for item in outcome.skipped]
    if not outcome.fixable:
        lines.append("no known vulnerability with a fix available")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.audit", description=__doc__.splitlines()[0]
    )
    parser.add_argument("-r", "--requirements", default=str(ROOT / "constraints.txt"))
    parser.add_argument("--service", choices=("pypi", "osv"), default=os.environ.get("AUDIT_SERVICE", "pypi"))
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole pip-audit run")
    args = parser.parse_args(argv)
    required = os.environ.get("KOMBO_AUDIT_REQUIRED", "").strip().lower() in TRUE_VALUES
    requirements = Path(args.requirements)
    outcome = run_pip_audit(requirements, args.service, args.timeout)
    text = format_outcome(outcome, requirements=requirements, service=args.service, required=required)
    print(text, end="", file=sys.stdout if outcome.performed and not outcome.fixable else sys.stderr)
    return outcome.exit_code(required=required)


if __name__ == "__main__":
    raise SystemExit(main())
