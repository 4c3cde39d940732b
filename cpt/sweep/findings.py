"""Findings as claims checked against sweep reports: reproduced / contradicted / not resolved at this scale.

A finding (sweeps/llama3_synE_proxy/findings.yaml) names its sweep file, the folder it ran into, and
claims, each `{metric, arm, baseline, expect}` with expect one of `better`, `worse`, `no significant
difference` (cpt.sweep.stats' verdicts of the paired difference arm - baseline on common seeds).
The finding's line is decided by the measured verdicts only:

    reproduced                     every claim's verdict is the expected one
    contradicted                   some claim went significantly the other way (expected better or
                                   no difference, measured worse; expected worse, measured better)
    not resolved at this scale     anything else (an interval that includes 0 where a difference
                                   was expected)
    not run yet                    the sweep folder has no results

`render_findings` writes docs/proxy/README.md from the reports (one table per finding, produced by
`cpt sweep report` for each baseline a claim names), the sweep's wall time and load average as
recorded by `record_wall`, and the exact commands.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from cpt.sweep.stats import NO_DIFFERENCE

EXPECTATIONS = ("better", "worse", NO_DIFFERENCE)
WALL_FILE = "wall.json"


@dataclass(frozen=True, slots=True)
class Claim:
    metric: str
    arm: str
    baseline: str
    expect: str


@dataclass(frozen=True, slots=True)
class Finding:
    key: str
    """short id, e.g. `4` or `6`"""
    title: str
    """the paper's claim in one line"""
    sweep: str
    """sweep file, relative to the repository root"""
    out: str
    """SWEEP_DIR, relative to the repository root"""
    claims: tuple[Claim, ...]
    notes: str = ""
    """what the proxy changes about the finding (one paragraph)"""


def load_findings(path: Path) -> list[Finding]:
    """findings.yaml; an error names the file and the finding."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    out = []
    for i, item in enumerate(data.get("findings") or []):
        where = f"{path}: findings[{i}]"
        try:
            claims = tuple(Claim(**c) for c in item["claims"])
            finding = Finding(key=str(item["key"]), title=item["title"], sweep=item["sweep"], out=item["out"],
                              claims=claims, notes=item.get("notes", ""))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{where}: {exc}") from None
        for c in claims:
            if c.expect not in EXPECTATIONS:
                raise ValueError(f"{where}: expect {c.expect!r} is not one of {EXPECTATIONS}")
        out.append(finding)
    return out


def measured_verdict(report: dict[str, Any], claim: Claim) -> Optional[str]:
    """The paired verdict of claim.arm vs claim.baseline in a report against that baseline (None: absent)."""
    entry = report.get("metrics", {}).get(claim.metric, {}).get("arms", {}).get(claim.arm, {})
    paired = entry.get("vs_baseline") or {}
    return paired.get("verdict") if paired.get("n") else None


def decide(expected_and_measured: list[tuple[str, Optional[str]]]) -> str:
    """The finding's line from its claims' (expected, measured) verdicts (module docstring)."""
    if not expected_and_measured or any(m is None for _, m in expected_and_measured):
        return "not run yet"
    opposite = {"better": "worse", "worse": "better", NO_DIFFERENCE: "worse"}
    if any(m == opposite[e] for e, m in expected_and_measured):
        return "contradicted"
    if all(m == e for e, m in expected_and_measured):
        return "reproduced"
    return "not resolved at this scale"


def finished_runs(sweep_dir: Path) -> int:
    """Runs of the sweep folder committed so far (their result.json written)."""
    from cpt.sweep.runner import RESULT_FILE

    return sum(1 for _ in (sweep_dir / "runs").glob(f"*/*/{RESULT_FILE}"))


def record_wall(sweep_dir: Path, seconds: float, loadavg_start: list[float], loadavg_end: list[float],
                command: str, runs_ran: Optional[int] = None, runs_done: Optional[int] = None) -> None:
    """SWEEP_DIR/wall.json: one sweep command's wall time and the load average around it, and how many
    of the folder's finished runs that command ran (a resumed sweep's time covers only those)."""
    from cpt.io import write_json_atomic

    write_json_atomic(sweep_dir / WALL_FILE, {"seconds": round(seconds, 1), "loadavg_start": loadavg_start,
                                              "loadavg_end": loadavg_end, "command": command,
                                              "runs_ran": runs_ran, "runs_done": runs_done})


def wall_minutes(wall: dict[str, Any]) -> str:
    """A wall.json's time in minutes, saying when it covers only part of the runs (the rest ran before)."""
    ran, done = wall.get("runs_ran"), wall.get("runs_done")
    part = f" for {ran} of {done} runs (the others ran in an earlier call)" if ran is not None and ran < done else ""
    return f"{wall['seconds'] / 60:.1f} min{part}"


__all__ = ["Claim", "EXPECTATIONS", "Finding", "WALL_FILE", "decide", "finished_runs", "load_findings",
           "measured_verdict", "record_wall", "wall_minutes"]
