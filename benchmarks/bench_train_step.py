"""Training-step throughput: our megatron-core engine against a plain PyTorch loop with SDPA.

The same ≈10M-parameter Llama (RMSNorm, SwiGLU, RoPE, GQA, untied embeddings; seq 256, batch 8,
fp32, AdamW, clip 1.0) is trained by both, in one process. Steps are measured in pairs, one step of
each, the order alternating from pair to pair: on a shared machine the load drifts over seconds to
minutes, so two neighbouring steps see about the same load, and the median over pairs of the
per-pair ratio is far steadier than a ratio of two separately timed runs. Wall and CPU time of this
process are both reported (CPU time is less sensitive to other processes, not immune: 2 cores
shared means cache and memory-bandwidth contention). Prints tokens/s of each, the ratio ours/plain
and its spread over pairs; the last line is JSON.

    python benchmarks/bench_train_step.py [--pairs 16]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

SEQ, BATCH, VOCAB = 256, 8, 8192
LAYERS, HIDDEN, FFN, HEADS, GROUPS = 8, 256, 688, 8, 4


class PlainLlama(torch.nn.Module):
    """A straightforward Llama in PyTorch: the baseline the engine is measured against."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(VOCAB, HIDDEN)
        hd = HIDDEN // HEADS
        self.layers = torch.nn.ModuleList()
        for _ in range(LAYERS):
            self.layers.append(torch.nn.ModuleDict({
                "n1": torch.nn.RMSNorm(HIDDEN, eps=1e-5),
                "qkv": torch.nn.Linear(HIDDEN, HIDDEN + 2 * GROUPS * hd, bias=False),
                "o": torch.nn.Linear(HIDDEN, HIDDEN, bias=False),
                "n2": torch.nn.RMSNorm(HIDDEN, eps=1e-5),
                "fc1": torch.nn.Linear(HIDDEN, 2 * FFN, bias=False),
                "fc2": torch.nn.Linear(FFN, HIDDEN, bias=False),
            }))
        self.norm = torch.nn.RMSNorm(HIDDEN, eps=1e-5)
        self.out = torch.nn.Linear(HIDDEN, VOCAB, bias=False)
        inv = 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))
        freqs = torch.outer(torch.arange(SEQ).float(), inv)
        self.register_buffer("cos", torch.cat([freqs, freqs], -1).cos(), persistent=False)
        self.register_buffer("sin", torch.cat([freqs, freqs], -1).sin(), persistent=False)

    def _rope(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return x * self.cos + torch.cat([-x2, x1], -1) * self.sin

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, s = tokens.shape
        hd = HIDDEN // HEADS
        h = self.emb(tokens)
        for layer in self.layers:
            x = layer["n1"](h)
            q, k, v = layer["qkv"](x).split([HIDDEN, GROUPS * hd, GROUPS * hd], -1)
            q = self._rope(q.view(b, s, HEADS, hd).transpose(1, 2))
            k = self._rope(k.view(b, s, GROUPS, hd).transpose(1, 2))
            v = v.view(b, s, GROUPS, hd).transpose(1, 2)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            h = h + layer["o"](a.transpose(1, 2).reshape(b, s, HIDDEN))
            gate, up = layer["fc1"](layer["n2"](h)).chunk(2, -1)
            h = h + layer["fc2"](F.silu(gate) * up)
        return self.out(self.norm(h))


DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def plain_runner():
    torch.manual_seed(0)
    model = PlainLlama().to(DEVICE)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, foreach=True)

    def step(tokens: np.ndarray) -> float:
        t = torch.from_numpy(tokens).to(DEVICE)
        logits = model(t[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), t[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return float(loss)

    return step, sum(p.numel() for p in model.parameters())


def engine_runner():
    from cpt.config import recipe_from_dict
    from megatron_ext.engine import MegatronEngine

    recipe = recipe_from_dict({
        "model": dict(num_layers=LAYERS, hidden_size=HIDDEN, ffn_hidden_size=FFN, num_attention_heads=HEADS,
                      num_query_groups=GROUPS, vocab_size=VOCAB, max_position_embeddings=SEQ,
                      make_vocab_size_divisible_by=128),
        "training": dict(seq_length=SEQ, micro_batch_size=BATCH, global_batch_size=BATCH,
                         train_tokens=SEQ * BATCH, precision="fp32", output_dir="/tmp/bench_train_step"),
    })
    engine = MegatronEngine(recipe)
    ones = np.ones((BATCH, SEQ), np.float32)

    def step(tokens: np.ndarray) -> float:
        batch = {"tokens": tokens[:, :-1], "labels": tokens[:, 1:], "loss_mask": ones}
        return engine.train_step(iter([batch]), 1, 1e-4).loss

    return step, engine.num_parameters, engine


def timed_step(step, batch: np.ndarray) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one training step. Each step returns a float
    loss, so the work has finished (a device sync) when it returns."""
    wall, cpu = time.perf_counter(), time.process_time()
    step(batch)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=16, help="measured pairs (one step of each)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, VOCAB, size=(BATCH, SEQ + 1), dtype=np.int64) for _ in range(4)]
    plain, plain_params = plain_runner()
    ours, our_params, engine = engine_runner()
    print(f"parameters: plain {plain_params / 1e6:.2f}M, ours {our_params / 1e6:.2f}M; threads {torch.get_num_threads()}")
    for runner in (plain, ours):  # warm-up
        runner(batches[0])
        runner(batches[1])
    times = {"plain": [], "ours": []}  # per pair: (wall, cpu)
    for i in range(args.pairs):
        batch = batches[i % len(batches)]
        order = ("plain", "ours") if i % 2 == 0 else ("ours", "plain")
        for name in order:
            times[name].append(timed_step(plain if name == "plain" else ours, batch))
        p, o = times["plain"][-1], times["ours"][-1]
        print(f"pair {i:2d}: plain {p[0]:.2f}s ({p[1]:.2f} cpu-s), ours {o[0]:.2f}s ({o[1]:.2f} cpu-s), "
              f"ratio {p[0] / o[0]:.3f} (cpu {p[1] / o[1]:.3f})")
    engine.close()
    tokens = BATCH * SEQ
    result = {"bench": "train_step", "device": str(DEVICE)}
    for k, label in ((0, ""), (1, "_cpu")):
        plain_t = np.array([t[k] for t in times["plain"]])
        our_t = np.array([t[k] for t in times["ours"]])
        ratios = plain_t / our_t  # = ours tokens/s over plain tokens/s, pair by pair
        unit = "tokens_per_s" if k == 0 else "tokens_per_cpu_s"
        result[f"ours_{unit}"] = round(tokens / float(np.median(our_t)), 1)
        result[f"plain_{unit}"] = round(tokens / float(np.median(plain_t)), 1)
        result[f"ratio{label}"] = round(float(np.median(ratios)), 3)
        result[f"ratio{label}_p25_p75"] = [round(float(q), 3) for q in np.percentile(ratios, [25, 75])]
    result.update(pairs=args.pairs, params_m=round(our_params / 1e6, 2), seq=SEQ, batch=BATCH)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
