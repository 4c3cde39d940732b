"""Loader worker processes (`data.num_workers`): they read what the trainer process would, and
they are never forked from it (cpt.train.stream_data.reader_pool says why)."""
import os
import subprocess
import sys
import threading

import numpy as np

from cpt.train.stream_data import WORKER_DIED, reader_pool
from test_loader_prefetch import run


def test_worker_processes_read_the_same_batches_as_the_trainer_process(tmp_path):
    changes = {3: [0.9, 0.1], 7: [0.2, 0.8]}
    alone, *_ = run(tmp_path / "a", True, changes, steps=8)
    pooled, *_ = run(tmp_path / "b", True, changes, steps=8, workers=2)
    assert len(alone) == len(pooled)
    for a, b in zip(alone, pooled):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_workers_are_not_forked_from_a_process_with_threads():
    release = threading.Event()
    busy = threading.Thread(target=release.wait, daemon=True)  # a trainer always has other threads
    busy.start()
    pool = reader_pool(2)
    try:
        parents = {pool.submit(os.getppid).result(timeout=60) for _ in range(4)}
    finally:
        pool.shutdown()
        release.set()
    assert os.getpid() not in parents  # a fork server's children, not this process's
    assert reader_pool(0) is None


def test_a_training_script_without_a_main_guard_gets_told_why_its_workers_died(tmp_path):
    from test_sampling_cache import write_shard

    rng = np.random.default_rng(0)
    prefix = write_shard(tmp_path / "s", rng.integers(20, 60, 40), ["en"] * 40, rng.random(40).tolist())
    script = tmp_path / "train_without_guard.py"
    script.write_text(f"""
import numpy as np
from cpt.config import DataConfig
from cpt.sampling import DocumentTable, Stream, StreamConfig
from cpt.train.stream_data import BlendedSamples

table = DocumentTable.from_shards([{prefix!r}], ["lang"])
src = BlendedSamples([Stream(table, StreamConfig(name="en", seq_length=16))], [1.0], 16, DataConfig(),
                     num_workers=1, prefetch=False)
src.fetch(np.arange(2))
""")
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert run.returncode != 0
    assert WORKER_DIED in run.stderr
