"""metrics.jsonl: context fields on every record, nested figures, and a torn last line (a process
killed mid-write) cut off before a resumed run appends."""
from __future__ import annotations

import json

from cpt.train.metrics import MetricsLogger


def test_records_carry_context_and_a_torn_tail_is_dropped_on_reopen(tmp_path):
    log = MetricsLogger(tmp_path, enabled=True, tensorboard=False)
    log.context = {"stage": "s1", "consumed_tokens": 512}
    log.log("eval", 1, {"loss": 2.0, "streams": {"en": {"ppl": 7.4}}})
    log.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "step": 2, "lo')  # killed here
    log = MetricsLogger(tmp_path, enabled=True, tensorboard=False)
    log.log("train", 2, {"loss": 1.5})
    log.close()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in records] == [("eval", 1), ("train", 2)]
    assert records[0]["stage"] == "s1" and records[0]["consumed_tokens"] == 512
    assert records[0]["streams"] == {"en": {"ppl": 7.4}}


def test_disabled_logger_writes_nothing(tmp_path):
    log = MetricsLogger(tmp_path / "run", enabled=False, tensorboard=False)
    log.log("train", 1, {"loss": 1.0})
    log.write_file("recipe.yaml", "x: 1\n")
    log.close()
    assert not (tmp_path / "run").exists()
