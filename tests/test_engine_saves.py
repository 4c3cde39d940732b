"""The megatron engine's checkpoints on CPU/gloo: retention in a real run; the asynchronous save
(dist_checkpointing's async API) trains the same losses, commits atomically and loads, also at DP=2
where the ranks share the writing of the weights; a process
SIGKILLed after writing a checkpoint's shards but before its commit resumes from the previous one."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launch import REPO, launch, torchrun

from train_fixtures import write_byte_shards

pytestmark = pytest.mark.slow
WORKER = Path(__file__).parent / "workers" / "save_cases.py"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("saves")
    train, _ = write_byte_shards(root / "shards")
    return root, train


def _read(out: Path, case: str) -> dict:
    return json.loads((out / case / "result.json").read_text())


def test_async_save_equals_sync_and_keeps_the_last_two(shards):
    root, train = shards
    out = root / "out"
    launch([sys.executable, str(WORKER), "--train", train, "--out", str(out), "sync", "async"], timeout=600)
    sync, asyn = _read(out, "sync"), _read(out, "async")
    assert len(sync["losses"]) == 6 and asyn["losses"] == sync["losses"]
    for r in (sync, asyn):
        assert r["checkpoints"] == ["step_00000004", "step_00000006"]
        assert r["loaded_step"] == 6 and r["loaded_checksum"] == r["checksum"]
    assert asyn["checksum"] == sync["checksum"]
    assert not list((out / "async" / "run" / "checkpoints").glob("*.partial"))


def test_dp2_saves_spread_the_writing_sync_and_async(shards):
    root, train = shards
    out = root / "out_dp2"
    launch([*torchrun(2), str(WORKER), "--train", train, "--out", str(out), "sync_dp2", "async_dp2"], timeout=600)
    sync, asyn = _read(out, "sync_dp2"), _read(out, "async_dp2")
    assert len(sync["losses"]) == 6 and asyn["losses"] == sync["losses"]
    for r in (sync, asyn):
        assert r["checkpoints"] == ["step_00000004", "step_00000006"]
        assert r["loaded_step"] == 6 and r["loaded_checksum"] == r["checksum"]
        # each rank writes its optimizer shard and about half the weights; unspread, rank 0 wrote
        # every weight: 5/8 of the bytes at fp32 (4 bytes of weight, 6 of optimizer per parameter)
        shares = {rank: n / sum(r["written_per_rank"].values()) for rank, n in r["written_per_rank"].items()}
        assert set(shares) == {"0", "1"} and min(shares.values()) > 0.45, shares
        # fully_parallel_load: the same parameters, each rank reading its optimizer shard and about
        # half the weights instead of all of them
        assert r["spread_loaded_step"] == 6 and r["spread_loaded_checksum"] == r["checksum"]
        for plain, spread in r["read_per_rank"]:
            assert spread < 0.85 * plain, r["read_per_rank"]


def test_kill_after_shards_before_commit_resumes_from_previous(shards):
    root, train = shards
    out = root / "kill"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(WORKER), "--train", train, "--out", str(out), "kill_save"],
                            cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    flag = out / "kill_save" / "at_kill_point"
    deadline = time.monotonic() + 300
    while not flag.exists():
        if proc.poll() is not None:
            raise AssertionError(f"worker exited ({proc.returncode}): {proc.stderr.read()[-3000:]}")
        assert time.monotonic() < deadline, "worker did not reach the kill point"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    ckpts = out / "kill_save" / "run" / "checkpoints"
    assert (ckpts / "step_00000003.partial").is_dir()  # the shards are there, uncommitted
    assert (ckpts / "latest").read_text().strip() == "step_00000002"
    launch([sys.executable, str(WORKER), "--train", train, "--out", str(out), "load_latest"], timeout=600)
    r = _read(out, "load_latest")
    assert r["loaded"] and r["step"] == 2 and r["final_step"] == 6
    assert r["checkpoints"] == ["step_00000005", "step_00000006"]
