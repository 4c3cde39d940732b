"""`cpt preprocess --executor E --num-shards N`: all slices on an executor, then one assembly.

The driver plans the input and sets up the work folder (`PREFIX.cpt-work/`, keyed by the plan
fingerprint) exactly as a one-process run does - while the executor starts and its first workers
(Ray's, or local processes started ahead) load the tokenizer and engine that the slices they run
will take (`warm_up_task`) - and hands each slice task its chunks, every N-th (`interleaved_slice`),
bound to that fingerprint: the slice checks that the input it reads has it
(file sizes and mtimes, options, tokenizer) instead of planning again, then tokenizes them into that
same folder, skipping chunks already finished, so a retried or rerun slice resumes. Having done its
own chunks, a slice takes those other slices have not started on (the whole plan is in the launch's
claims folder; `cpt.shards.claims`: each chunk is built by the one slice that claims it, a retried
slice takes back its dead attempt's claims), so the slices end together. The chunks are assembled
in plan order, as a one-process run does, whoever built them: by the driver while the slices run
(`Assembly` as the launch's merge stream: local, Ray), or by the merge task once they all ended
(Slurm).
The output is therefore the one-process output byte for byte, whatever the executor, the number
of slices or the number of attempts; and a killed one-process run can be finished by a launch (and
the other way round), as both use the same fingerprint. Requires a file system all tasks share.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cpt.corpus.plan import interleaved_slice
from cpt.io import write_json_atomic
from cpt.launch import LaunchSpec, Task, launch
from cpt.launch.run import start_executor
from cpt.launch.progress import TaskProgress
from cpt.launch.timeline import Timeline
from cpt.shards.claims import Claims, new_claims_folder, steal_order
from cpt.shards.pipeline import (Assembly, PreprocessConfig, _run_chunks, assemble, finish, handed_chunks, handed_plan,
                                 prepare, warm)

CLAIMS_PLAN = "plan.json"
"""The whole plan (`handed_plan`) in a launch's claims folder, written once by the driver."""


def _config(config: dict[str, Any]) -> PreprocessConfig:
    return PreprocessConfig(**config)


def slice_task(config: dict[str, Any], index: int, count: int, plan: dict[str, Any],
               claims: str | None = None) -> dict[str, Any]:
    """Tokenize the chunks of slice `index` of `count` not finished yet into the shared work folder.

    `plan`: the slice's chunks as the driver planned them (`handed_plan`: every `count`-th chunk
    from `index`); the slice checks that they are the plan of the input it reads, not plan again.
    `claims`: the launch's claims folder (holding the whole plan, `CLAIMS_PLAN`): then each chunk
    is built only under this slice's claim, and after its own chunks the slice takes the other
    slices' unclaimed ones; without it, exactly its own chunks."""
    p = prepare(_config(config), own_work_dir=False, given=plan, reuse=True)
    prepared = time.perf_counter()
    mine = p.plan
    todo = p.todo(mine)
    resumed = len(mine) - len(todo)  # own chunks committed before this attempt
    print(f"[preprocess] slice {index}/{count}: {len(mine)} chunks, {resumed} already done",
          file=sys.stderr, flush=True)
    claim = None
    if claims is not None:
        claim = Claims(Path(claims), f"slice-{index:05d}")
        whole = handed_chunks(p, json.loads((Path(claims) / CLAIMS_PLAN).read_text()))
        todo = p.todo(steal_order(mine, whole))
    progress = TaskProgress()
    results = _run_chunks(p.job, todo, p.cfg.workers, progress, p.engine, claim)
    progress.close()
    own = {c.index for c in mine}
    return {"chunks": len(mine), "chunks_resumed": resumed,
            "results": results, "built": [r["chunk"] for r in results],
            "taken": sum(r["chunk"] not in own for r in results),
            "prepare_seconds": p.seconds, "chunks_seconds": round(time.perf_counter() - prepared, 3),
            "reused_tokenizer": p.reused}


def warm_up_task(config: dict[str, Any]) -> dict[str, Any]:
    """Load the tokenizer and engine of this launch's slices into this worker's cache, for the
    slices it will run (`pipeline.warm`); returns the seconds of each step."""
    return {"prepare_seconds": warm(_config(config))}


def merge_task(config: dict[str, Any]) -> dict[str, Any]:
    """Assemble all chunks into the final shards (the one-process bytes); return their manifests."""
    p = prepare(_config(config), own_work_dir=False, encode=False)
    missing = p.todo(p.plan)
    if missing:
        raise ValueError(f"{p.work}: {len(missing)} chunks are not finished (first: chunk {missing[0].index}); "
                         f"rerun the command")
    return assemble(p, p.plan)


def run_launched(cfg: PreprocessConfig, spec: LaunchSpec, slices: int) -> dict[str, Any]:
    """Plan here, run `slices` slice tasks on `spec.executor`, assemble; return the summary."""
    t0 = time.perf_counter()
    timeline = Timeline()
    timeline.mark("driver_ready")
    whole = dataclasses.replace(cfg, shard_index=0, num_shards=1, workers=spec.cpus_per_task, progress=False)
    config = dataclasses.asdict(whole)
    warm_up = Task(name="warm-up", fn=f"{__name__}:warm_up_task", kwargs={"config": config})
    with ThreadPoolExecutor(1) as pool:  # plan here while the executor starts (Ray: seconds)
        planned = pool.submit(prepare, whole, True, False)  # the driver encodes nothing: no engine probe
        planned.add_done_callback(lambda _: timeline.mark("planned"))
        try:  # its workers start and load the tokenizer and engine while the plan is made
            executor = start_executor(spec, launch_dir(cfg), warm_up, slices)
            timeline.mark("executor_started")
        except BaseException:
            planned.result()
            raise
        try:
            p = planned.result()
        except BaseException:
            executor.stop()
            raise
    todo = p.todo(p.plan)
    from cpt.shards.pipeline import _print_header

    _print_header(p, p.plan, todo, f", {slices} slices on {spec.executor}",
                  f"{whole.engine} (chosen and verified in each slice)")
    claims = new_claims_folder(p.work)
    write_json_atomic(claims / CLAIMS_PLAN, handed_plan(p, p.plan), indent=None)
    mine = [interleaved_slice(p.plan, i, slices) for i in range(slices)]
    tasks = [Task(name=f"slice-{i:05d}-of-{slices:05d}", fn=f"{__name__}:slice_task",
                  kwargs={"config": config, "index": i, "count": slices, "plan": handed_plan(p, mine[i]),
                          "claims": str(claims.absolute())},
                  units=sum(c.size for c in p.todo(mine[i])))
             for i in range(slices)]
    merge = Task(name="merge", fn=f"{__name__}:merge_task", kwargs={"config": config})
    report = launch(tasks, merge, spec, launch_dir(cfg), "preprocess", executor=executor,
                    merge_stream=lambda: Assembly(p, p.plan), timeline=timeline)
    # one result per chunk: a chunk two builders finished (the second kept the first's) counts once
    built = {r["chunk"]: r for out in report.results for r in out["results"] if r.get("committed", True)}
    results = [built[k] for k in sorted(built)]
    t_tokenize = time.perf_counter() - t0
    summary = finish(p, p.plan, results, len(p.plan) - len(todo), t0, t_tokenize, outputs=report.merge)
    summary["launch"] = str(launch_dir(cfg) / "summary.json")
    return summary


def launch_dir(cfg: PreprocessConfig) -> Path:
    return Path(f"{cfg.output_prefix}.launch")


__all__ = ["merge_task", "run_launched", "slice_task", "warm_up_task"]
