"""Host memory, time and the busiest writer of a checkpoint save and load, per rank, for each form
of the distributed optimizer's state (parallel.optimizer_checkpoint), at several data-parallel sizes.

- `dp_reshardable` (the default): each rank writes its own shard of the optimizer state as it lies
  in the gradient buckets; no gather, no copy.
- `fully_reshardable`: every save gathers the whole state over DP, per parameter, on every rank
  (megatron's `get_parameter_state_dp_zero(return_on_all_ranks=True)`), so each rank holds 12 bytes
  (fp32 main parameter, exp_avg, exp_avg_sq) per parameter of its TP/PP part, whatever DP is; every
  load reads that whole state on each rank too. What it buys: a resume may change TP and PP.
- `..._unspread`: the same, with what every DP rank holds alike (the weights; fully_reshardable's
  gathered state) all written by DP rank 0, as before the engine spread it (megatron's
  FullyParallelSaveStrategyWrapper). `fully_reshardable_unspread` is the engine before both changes.
- `dp_reshardable_parallel_load`: the first, loaded with training.fully_parallel_load: each weight
  read by one DP rank and sent to the others, rather than read by every rank.

One torchrun launch per DP size (TP = PP = 1, the CPU/gloo engine, a small Llama of `--hidden` and
`--layers`); in it the modes alternate over `--rounds` (benchmarks/rounds.py), each round one save
and one load of the state after one training step. "Extra" is the rise of the rank's peak resident
memory (VmHWM, reset just before; benchmarks/peak_memory.py) over its resident size then: every
temporary counts. "Busiest writer": the most shard bytes one rank wrote, against the mean over
ranks; a save lasts as long as its busiest writer on a parallel file system (here one disk, whose
page cache hides it). Figures are the worst rank of the best round. Linux only.

    python benchmarks/bench_ckpt_save.py [--dp 1 2 4] [--hidden 512] [--layers 8] [--rounds 3]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peak_memory import MB, io_mb, reset_peak, rss_mb, trim_heap  # noqa: E402
from rounds import add_rounds_option, alternating  # noqa: E402

# mode -> (the optimizer's form, whether the weights' writing is spread over the DP ranks, whether
# their reading is: training.fully_parallel_load)
MODES = {"dp_reshardable": ("dp_reshardable", True, False),
         "fully_reshardable": ("fully_reshardable", True, False),
         "dp_reshardable_unspread": ("dp_reshardable", False, False),
         "fully_reshardable_unspread": ("fully_reshardable", False, False),  # the engine until 2026-12
         "dp_reshardable_parallel_load": ("dp_reshardable", True, True)}
SEQ = 128


def _recipe(args: argparse.Namespace, dp: int, out: Path) -> dict:
    return {
        "model": dict(num_layers=args.layers, hidden_size=args.hidden, ffn_hidden_size=args.hidden * 8 // 3 // 64 * 64,
                      num_attention_heads=args.hidden // 64, num_query_groups=max(1, args.hidden // 256),
                      vocab_size=args.vocab, max_position_embeddings=SEQ),
        "data": {"blend": [["unused", 1.0]]},  # the benchmark feeds its own batch
        "training": dict(output_dir=str(out), seq_length=SEQ, micro_batch_size=1, global_batch_size=dp,
                         train_tokens=SEQ * dp, precision="fp32", tensorboard=False),
    }


def _written_per_rank(folder: Path) -> dict[int, int]:
    """Bytes of shard files each rank wrote (torch_dist names them __RANK_N.distcp): a save takes as
    long as its busiest writer."""
    written: dict[int, int] = {}
    for f in folder.glob("__*_*.distcp"):
        rank = int(f.name[2:].split("_")[0])
        written[rank] = written.get(rank, 0) + f.stat().st_size
    return written


def _measure(engine, folder: Path, mode: str) -> dict:
    """One save and one load in `mode`: seconds and extra peak memory (MiB) of this rank."""
    import torch.distributed as dist

    engine.optimizer_form, engine.spread_saves, engine.recipe.training.fully_parallel_load = MODES[mode]
    result = {}
    for what in ("save", "load"):
        gc.collect()
        result["heap_trimmed"] = trim_heap()
        dist.barrier()
        io_field = "wchar" if what == "save" else "rchar"
        io_before = io_mb(io_field)
        base = reset_peak()
        start = time.perf_counter()
        if what == "save":
            engine.save(folder, {"step": 1, "layout": engine.layout_key()})
        else:
            engine.load(folder)
        dist.barrier()
        result[f"{what}_s"] = time.perf_counter() - start
        result[f"{what}_{'written' if what == 'save' else 'read'}_mb"] = io_mb(io_field) - io_before
        result[f"{what}_extra_mb"] = rss_mb("VmHWM") - base
        result[f"{what}_base_mb"] = base
    if engine.layout.rank == 0:
        result["disk_mb"] = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / MB
        written = _written_per_rank(folder)
        result["max_rank_write_mb"] = max(written.values()) / MB
        result["write_imbalance"] = max(written.values()) * len(written) / max(sum(written.values()), 1)
        shutil.rmtree(folder)
    dist.barrier()
    return result


def worker(args: argparse.Namespace) -> None:
    import numpy as np
    import torch.distributed as dist

    from cpt.config import recipe_from_dict
    from megatron_ext.engine import MegatronEngine

    dp = int(os.environ.get("WORLD_SIZE", "1"))
    recipe = recipe_from_dict(_recipe(args, dp, args.workdir / "run"))
    engine = MegatronEngine(recipe)
    rng = np.random.default_rng(engine.layout.rank)
    tokens = rng.integers(0, args.vocab, (1, SEQ + 1))
    batch = {"tokens": tokens[:, :-1], "labels": tokens[:, 1:], "loss_mask": np.ones((1, SEQ), np.float32)}
    engine.train_step(iter([batch]), 1, lr=1e-4)  # AdamW's state exists after a first step
    rounds = []
    for r, mode in alternating(list(MODES), args.rounds):
        rounds.append({"round": r, "mode": mode, **_measure(engine, args.workdir / f"{mode}_{r}", mode)})
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, rounds)
    if engine.layout.rank == 0:
        args.result.write_text(json.dumps({"params": engine.num_parameters, "ranks": gathered}))
    engine.close()


def _launch(args: argparse.Namespace, dp: int, workdir: Path) -> dict:
    result = workdir / f"dp{dp}.json"
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    cmd = [torchrun, f"--nproc_per_node={dp}", f"--master_port={_free_port()}",
           __file__, "--worker", "--workdir", str(workdir / f"dp{dp}"), "--result", str(result),
           "--hidden", str(args.hidden), "--layers", str(args.layers), "--vocab", str(args.vocab),
           "--rounds", str(args.rounds)]
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"bench_ckpt_save: DP={dp} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(result.read_text())


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def summarise(ranks: list[list[dict]]) -> dict[str, dict]:
    """Per mode: the worst rank's figures in each round, then the best round (least time; the memory
    of a deterministic operation barely moves between rounds, so its round's worst rank stands)."""
    out = {}
    for mode in MODES:
        per_round: dict[int, dict] = {}
        for rank_rounds in ranks:
            for rec in rank_rounds:
                if rec["mode"] != mode:
                    continue
                worst = per_round.setdefault(rec["round"], {})
                for key, value in rec.items():
                    if key == "heap_trimmed":
                        worst[key] = worst.get(key, True) and value
                    elif key not in ("round", "mode"):
                        worst[key] = max(worst.get(key, value), value)
        best = min(per_round.values(), key=lambda r: r["save_s"] + r["load_s"])
        out[mode] = {k: v if isinstance(v, bool) else round(v, 3 if k.endswith(("_s", "imbalance")) else 1)
                     for k, v in sorted(best.items())}
    return out


def _per_mode(by_dp: dict, dps: list[int], key: str) -> dict[str, list[float]]:
    return {mode: [by_dp[d][mode][key] for d in dps] for mode in MODES}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dp", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--vocab", type=int, default=32000)
    add_rounds_option(p, default=3)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    loadavg = [round(x, 2) for x in os.getloadavg()]  # before our own ranks load the machine
    by_dp, params = {}, None
    with tempfile.TemporaryDirectory(prefix="bench_ckpt_") as tmp:
        for dp in args.dp:
            got = _launch(args, dp, Path(tmp))
            params = got["params"]
            by_dp[dp] = summarise(got["ranks"])
            for mode, r in by_dp[dp].items():
                print(f"DP={dp} {mode:28s}: save {r['save_s']:6.2f} s, +{r['save_extra_mb']:7.1f} MiB per rank "
                      f"({r['save_extra_mb'] * MB / params:5.2f} B/param); load {r['load_s']:6.2f} s, "
                      f"+{r['load_extra_mb']:7.1f} MiB; on disk {r['disk_mb']:.0f} MiB, busiest writer "
                      f"{r['max_rank_write_mb']:.0f} MiB ({r['write_imbalance']:.2f}x the mean); a rank reads "
                      f"up to {r['load_read_mb']:.0f} MiB")
    if not all(r["heap_trimmed"] for modes in by_dp.values() for r in modes.values()):
        print("note: no malloc_trim here (not glibc): memory one mode freed may be reused unseen by the next")
    top = max(args.dp)
    before, dpr = by_dp[top]["fully_reshardable_unspread"], by_dp[top]["dp_reshardable"]
    print(json.dumps({
        "bench": "ckpt_save", "params_m": round(params / 1e6, 2), "dp": args.dp,
        "save_extra_mb_per_rank": _per_mode(by_dp, args.dp, "save_extra_mb"),
        "load_extra_mb_per_rank": _per_mode(by_dp, args.dp, "load_extra_mb"),
        "save_s": _per_mode(by_dp, args.dp, "save_s"),
        "load_s": _per_mode(by_dp, args.dp, "load_s"),
        "before_save_bytes_per_param_at_max_dp": round(before["save_extra_mb"] * MB / params, 2),
        "now_save_bytes_per_param_at_max_dp": round(dpr["save_extra_mb"] * MB / params, 2),
        "save_memory_before_over_now_at_max_dp": round(before["save_extra_mb"] / max(dpr["save_extra_mb"], 1.0), 1),
        "save_time_before_over_now_at_max_dp": round(before["save_s"] / dpr["save_s"], 2),
        "busiest_writer_before_over_now_at_max_dp": round(before["max_rank_write_mb"] / dpr["max_rank_write_mb"], 2),
        "write_imbalance": _per_mode(by_dp, args.dp, "write_imbalance"),
        "busiest_writer_mb": _per_mode(by_dp, args.dp, "max_rank_write_mb"),
        "max_rank_read_mb": _per_mode(by_dp, args.dp, "load_read_mb"),
        "heap_trimmed": all(r["heap_trimmed"] for modes in by_dp.values() for r in modes.values()),
        "loadavg_at_start": loadavg,
    }))


if __name__ == "__main__":
    main()
