"""Chunk claims of a launch's slices (cpt/shards/claims.py): a chunk goes to exactly one claimant
even when processes race for it, a dead attempt's claim goes back to its own slice's retry and to
no other, a slice that ends its own chunks takes the others' unclaimed ones, a committed chunk is
never replaced, and the output stays the one-process bytes whoever built which chunk."""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
from pathlib import Path

import pytest

from cpt.corpus.plan import interleaved_slice
from cpt.io import write_json_atomic
from cpt.shards.build import build_chunk, chunk_dir, init_worker
from cpt.shards.claims import Claims, new_claims_folder, steal_order
from cpt.shards.launched import CLAIMS_PLAN, slice_task
from cpt.shards.pipeline import Assembly, PreprocessConfig, handed_plan, prepare
from launch_fixtures import CHUNK_MB, SP_MODEL, corpus, files_of, single  # noqa: F401

RACERS, CHUNKS = 4, 200


def _race(folder: str, owner: str, start, out) -> None:
    start.wait()
    claims = Claims(Path(folder), owner)
    out.put((owner, [i for i in range(CHUNKS) if claims.take(i)]))


def test_racing_processes_each_chunk_goes_to_exactly_one_and_stays_with_it(tmp_path):
    folder = new_claims_folder(tmp_path / "work")
    ctx = mp.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(folder), f"slice-{k:05d}", start, out)) for k in range(RACERS)]
    for p in procs:
        p.start()
    start.set()
    won = dict(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    taken = sorted(i for chunks in won.values() for i in chunks)
    assert taken == list(range(CHUNKS))  # every chunk once: none twice, none lost
    for owner, chunks in won.items():  # the winner is recorded with the claim; nobody else gets it later
        assert all(Claims(folder, owner).holder(i) == owner for i in chunks)
        other = next(o for o in won if o != owner)
        assert not any(Claims(folder, other).take(i) for i in chunks)


def test_a_dead_attempts_claim_goes_to_its_retry_only_and_a_new_launch_starts_without_claims(tmp_path):
    work = tmp_path / "work"
    folder = new_claims_folder(work)
    assert Claims(folder, "slice-00001").take(7)  # the attempt that claimed 7 dies here
    assert not Claims(folder, "slice-00000").take(7)  # another slice leaves it alone
    assert Claims(folder, "slice-00001").take(7)  # the retry of slice 1 takes it back
    assert Claims(folder, "slice-00001").holder(7) == "slice-00001" and Claims(folder, "x").holder(8) is None

    again = new_claims_folder(work)  # a rerun of the command: earlier launches' claims are gone
    assert again != folder and not folder.exists() and Claims(again, "slice-00000").take(7)
    with pytest.raises(ValueError, match=r"this launch's claims folder is gone .*; this slice stops") as gone:
        Claims(folder, "slice-00001").take(9)  # a slice of the earlier launch, still running
    assert "\n" not in str(gone.value)


def test_steal_order_is_own_chunks_then_the_others_in_plan_order(corpus, tmp_path):
    p = _planned(corpus, tmp_path)
    own = interleaved_slice(p.plan, 1, 3)
    order = [c.index for c in steal_order(own, p.plan)]
    others = [c.index for c in p.plan if c.index % 3 != 1]
    assert order == [c.index for c in own] + others


def test_a_committed_chunk_is_never_replaced(corpus, tmp_path):
    p = _planned(corpus, tmp_path)
    init_worker(p.job, p.engine)
    first = build_chunk(p.job, p.plan[0])
    folder = chunk_dir(p.work, 0)
    before = {f.name: os.stat(f).st_ino for f in folder.iterdir()}
    again = build_chunk(p.job, p.plan[0])  # a second builder of the same chunk (a lost claim)
    assert first["committed"] and not again["committed"]
    assert {f.name: os.stat(f).st_ino for f in folder.iterdir()} == before  # the first one's files stand
    assert sorted(x.name for x in p.work.iterdir() if ".tmp-" in x.name) == []  # its copy removed
    assert {k: v for k, v in again.items() if k != "committed"} == {k: v for k, v in first.items() if k != "committed"}


def test_slices_take_unclaimed_chunks_a_retry_finishes_its_dead_claim_and_bytes_equal_one_process(
        corpus, single, tmp_path, monkeypatch):
    out = tmp_path / "stolen"
    p = _planned(corpus, tmp_path, out)
    folder = new_claims_folder(p.work)
    write_json_atomic(folder / CLAIMS_PLAN, handed_plan(p, p.plan), indent=None)
    mine = [interleaved_slice(p.plan, i, 3) for i in range(3)]
    config = dataclasses.asdict(p.cfg)
    call = lambda i: slice_task(config, i, 3, handed_plan(p, mine[i]), str(folder))  # noqa: E731

    # slice 1's first attempt committed its first chunk and died building its second (claimed)
    dead = Claims(folder, "slice-00001")
    assert dead.take(mine[1][0].index) and dead.take(mine[1][1].index)
    init_worker(p.job, p.engine)
    build_chunk(p.job, mine[1][0])
    monkeypatch.setattr("cpt.shards.pipeline.make_plan", lambda *a: pytest.fail("a slice planned again"))

    first = call(0)  # its own chunks, then every other unclaimed one in plan order
    left = {mine[1][0].index, mine[1][1].index}
    assert first["built"] == [c.index for c in steal_order(mine[0], p.plan) if c.index not in left]
    assert first["taken"] == len(p.plan) - len(mine[0]) - 2
    late = call(2)  # started late: everything is claimed or committed
    assert late["built"] == [] and late["chunks"] == len(mine[2])
    retry = call(1)  # slice 1's retry: only the chunk its dead attempt claimed (the rest is committed)
    assert retry["built"] == [mine[1][1].index] and retry["taken"] == 0
    assert retry["chunks_resumed"] == len(mine[1]) - 1

    Assembly(p, p.plan).finish()
    assert files_of(out) == files_of(single)


def _planned(corpus: Path, tmp_path: Path, out: Path | None = None):
    """`corpus` planned by a launch's driver into `out` (work folder set up, nothing built)."""
    cfg = PreprocessConfig(inputs=[str(corpus)], output_prefix=str(out or tmp_path / "out"), tokenizer=SP_MODEL,
                           chunk_mb=float(CHUNK_MB), progress=False)
    return prepare(cfg)


def test_a_slice_with_a_pool_of_workers_builds_only_under_its_claims(corpus, tmp_path):
    from cpt.corpus.progress import Progress
    from cpt.shards.pipeline import _run_chunks

    p = _planned(corpus, tmp_path)
    folder = new_claims_folder(p.work)
    held = p.plan[3].index
    assert Claims(folder, "slice-00001").take(held)  # another slice holds it (building, or dead)
    results = _run_chunks(p.job, p.plan, 2, Progress("preprocess", 0, False), p.engine, Claims(folder, "slice-00000"))
    assert [r["chunk"] for r in results] == [c.index for c in p.plan if c.index != held]
    assert all(Claims(folder, "x").holder(c.index) == "slice-00000" for c in p.plan if c.index != held)
    assert not (chunk_dir(p.work, held)).exists()
