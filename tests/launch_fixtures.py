"""What the launch tests share: a real corpus cut into many small chunks, output comparison, and a
killer that SIGKILLs the process running a slice once it has finished part of its work."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annotate_fixtures import mixed_corpus
from cpt.assets import mistral_tokenizer_dir
from cpt.corpus.files import list_inputs
from cpt.corpus.plan import interleaved_slice, make_plan
from cpt.shards.pipeline import PreprocessConfig, run_preprocess

SP_MODEL = str(mistral_tokenizer_dir() / "tokenizer.model.v1")  # SentencePiece: loads in milliseconds
SUFFIXES = (".bin", ".idx", ".meta.parquet", ".manifest.json", ".skipped.jsonl")
CHUNK_MB = "0.004"


def write_corpus(root: Path) -> Path:
    """Real Chinese (People's Daily) and English (Wikipedia) text: a jsonl file and a parquet file."""
    docs = mixed_corpus(n_zh=30, n_en=30)
    root.mkdir(parents=True)
    with open(root / "a.jsonl", "w", encoding="utf-8") as f:
        for d in docs[::2]:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    pq.write_table(pa.Table.from_pylist(docs[1::2]), root / "b.parquet", row_group_size=3)
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The module's corpus (imported by a test module, pytest registers it there)."""
    return write_corpus(tmp_path_factory.mktemp("launch") / "corpus")


@pytest.fixture(scope="module")
def single(corpus, tmp_path_factory) -> Path:
    """The one-process `cpt preprocess` output of `corpus`: what every launch must equal."""
    out = tmp_path_factory.mktemp("single") / "one"
    run_preprocess(PreprocessConfig(inputs=[str(corpus)], output_prefix=str(out), tokenizer=SP_MODEL,
                                    chunk_mb=float(CHUNK_MB), progress=False))
    return out


def launch_summary(out: Path) -> dict:
    """OUT.launch/summary.json of the launch that wrote prefix `out`."""
    return json.loads((out.parent / f"{out.name}.launch" / "summary.json").read_text())


def slice_chunks(corpus: Path, index: int, count: int) -> list[int]:
    """The chunk indices slice `index` of `count` of a launch processes (the corpus gives each several)."""
    plan = make_plan(list_inputs([str(corpus)])[0], int(float(CHUNK_MB) * (1 << 20)))
    assert len(plan) >= 3 * count, "the corpus must give every slice several chunks"
    return [c.index for c in interleaved_slice(plan, index, count)]


def files_of(prefix: Path | str) -> dict[str, bytes]:
    return {s: Path(f"{prefix}{s}").read_bytes() for s in SUFFIXES}


def preprocess_argv(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["preprocess", "--input", str(corpus), "--output-prefix", str(out), "--tokenizer", SP_MODEL,
            "--chunk-mb", CHUNK_MB, "--no-progress", *extra]


def assert_built_once_but_the_dead_attempts(summary: dict, dead: list[int]) -> None:
    """Each chunk of a preprocess launch was built by exactly one successful attempt, except those
    of `dead` that a killed attempt committed before it died (it may also have lost them to
    another slice first)."""
    built = [i for task in summary["tasks"] for i in task["result"]["built"]]
    total = sum(task["result"]["chunks"] for task in summary["tasks"])
    assert len(built) == len(set(built)) and set(built) <= set(range(total))
    assert set(range(total)) - set(built) <= set(dead)


class SliceKiller(threading.Thread):
    """SIGKILL the process of `task`'s first attempt as soon as `done()` says it did part of its work."""

    def __init__(self, launch_dir: Path, task: str, done, timeout: float = 120.0):
        super().__init__(daemon=True)
        self.progress = Path(launch_dir) / "progress" / f"{task}.json"
        self.done, self.timeout = done, timeout
        self.killed_pid: int | None = None

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                state = json.loads(self.progress.read_text())
            except (OSError, ValueError):
                state = None
            if state and state["attempt"] == 1 and self.done():
                os.kill(state["pid"], signal.SIGKILL)
                self.killed_pid = state["pid"]
                return
            time.sleep(0.005)


def killed_slice_launch(corpus: Path, single: Path, folder: Path, monkeypatch, executor: str) -> tuple[dict, dict]:
    """`cpt preprocess --executor EXECUTOR --num-shards 4` with slice 1's process SIGKILLed once it
    committed its first chunk: the output equals one process's, the slice was retried once, and
    each chunk was built once. Returns the launch summary and slice 1's entry in it."""
    from cpt.cli import main
    from cpt.shards.build import DELAY_ENV, chunk_dir

    first = slice_chunks(corpus, 1, 4)[0]
    out = folder / executor
    monkeypatch.setenv(DELAY_ENV, "0.3")
    killer = SliceKiller(folder / f"{executor}.launch", "slice-00001-of-00004",
                         lambda: (chunk_dir(f"{out}.cpt-work", first) / "text.manifest.json").is_file())
    killer.start()
    assert main(preprocess_argv(corpus, out, "--executor", executor, "--num-shards", "4")) == 0
    killer.join()
    assert killer.killed_pid is not None
    assert files_of(out) == files_of(single)
    s = launch_summary(out)
    task = next(t for t in s["tasks"] if t["name"] == "slice-00001-of-00004")
    assert [a["ok"] for a in task["attempts"]] == [False, True] and s["retried"] == 1
    assert 1 <= task["result"]["chunks_resumed"] <= task["result"]["chunks"]
    assert_built_once_but_the_dead_attempts(s, [first])
    assert s["merge"]["ran"] and "merge_overlapped" not in s["phase_seconds"]  # Slurm's path: a merge job
    return s, task
