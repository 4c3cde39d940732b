"""Kill-and-resume: `tools/synthesize_qa.py` is SIGKILLed mid-run, rerun, and every record key
ends up exactly once in the journal and the output; a further run changes nothing."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cpt.synth import pipeline

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
FACTS = [
    "The net force on an object equals its mass times its acceleration.",
    "Friction opposes the relative motion of two surfaces in contact.",
    "Kinetic energy is one half of the mass times the square of the speed.",
    "Momentum is the product of mass and velocity and is conserved in collisions.",
]


def _synth(tmp: Path, *extra: str) -> subprocess.Popen:
    docs = tmp / "docs.jsonl"
    if not docs.exists():
        docs.write_text("".join(json.dumps({"id": f"doc{i}", "text": f"{f} " * 3}) + "\n" for i, f in enumerate(FACTS)))
    args = ["--input", str(docs), "--output", str(tmp / "qa.jsonl"), "--discipline", "physics",
            "--min-snippet-chars", "50", "--pairs-per-snippet", "1", "--batch-size", "1",
            "--max-new-tokens", "8", "--temperature", "0", "--progress-every", "0", "--threads", "1", *extra]
    return subprocess.Popen([sys.executable, str(REPO / "tools" / "synthesize_qa.py"), *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _keys(path: Path) -> list[str]:
    return [json.loads(line)["key"] for line in path.read_text().splitlines() if line.endswith("}")]


def test_sigkill_then_resume_without_duplicates(tmp_path):
    journal = pipeline.journal_path(tmp_path / "qa.jsonl")
    proc = _synth(tmp_path)
    deadline = time.monotonic() + 300
    while not (journal.exists() and journal.read_bytes().count(b"\n") >= 1):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no generation journaled in time"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    done_before = _keys(journal)
    assert 1 <= len(done_before) < len(FACTS), "the kill must land mid-run"
    assert not pipeline.summary_path(tmp_path / "qa.jsonl").exists()  # no summary: not complete
    with open(journal, "ab") as f:
        f.write(b'{"key": "doc3#0|phys')  # and a torn write, as a kill inside write() leaves

    resumed = _synth(tmp_path)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    summary = json.loads(pipeline.summary_path(tmp_path / "qa.jsonl").read_text())
    keys = _keys(journal)
    assert len(keys) == len(set(keys)) == len(FACTS) and keys[:len(done_before)] == done_before
    assert summary["resumed_from_journal"] == len(done_before)
    assert summary["generated_now"] == len(FACTS) - len(done_before) and summary["missing"] == 0
    assert summary["journal_torn_tail_bytes"] == len(b'{"key": "doc3#0|phys')
    ids = [json.loads(x)["id"] for x in (tmp_path / "qa.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids))

    output = (tmp_path / "qa.jsonl").read_bytes()
    again = _synth(tmp_path)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    summary = json.loads(pipeline.summary_path(tmp_path / "qa.jsonl").read_text())
    assert summary["generated_now"] == 0 and summary["resumed_from_journal"] == len(FACTS)
    assert (tmp_path / "qa.jsonl").read_bytes() == output and _keys(journal) == keys  # idempotent
    # --finalize-only re-filters the journal with other settings and never builds a generator.
    refilter = _synth(tmp_path, "--finalize-only", "--min-grounding", "0", "--generator", "vllm")
    _, err = refilter.communicate(timeout=600)
    assert refilter.returncode == 0, err
    summary = json.loads(pipeline.summary_path(tmp_path / "qa.jsonl").read_text())
    assert summary["generator"] is None and summary["generated_now"] == 0 and summary["missing"] == 0
