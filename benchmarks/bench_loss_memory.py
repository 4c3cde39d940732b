"""Peak extra memory of the language-model loss + its backward, against the bf16 logits tensor.

The logits of one sequence (s = 8192 tokens, Llama-3's V = 128,256 plus megatron's padding to a
multiple of 128, from a small hidden size) are made in bf16, as the output layer makes them; then
each loss runs forward and backward to the logits in a fresh process:

- `ours`: megatron_ext.loss.cross_entropy (row chunks upcast one at a time, padded rows masked);
- `before`: what LlamaGPTModel computed until now, F.cross_entropy(logits.float()).

"Extra" is the rise of the process's peak resident memory (VmHWM, reset through
/proc/self/clear_refs just before the loss) over its resident memory with the logits made: it
counts every temporary and the logits gradient itself, whose size is that of the logits. Linux only.
The `before` case needs about six times the logits' size (≈ 13 GB at the defaults).

    python benchmarks/bench_loss_memory.py [--seq 8192] [--vocab 128256] [--hidden 64]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from peak_memory import MB, reset_peak, rss_mb


def measure(which: str, seq: int, vocab: int, hidden: int) -> dict:
    """Run in a child process: the peak extra resident memory of one loss + backward."""
    import torch
    import torch.nn.functional as F

    from megatron_ext.loss import cross_entropy

    torch.manual_seed(0)
    padded = -(-vocab // 128) * 128
    h = torch.randn(seq, hidden, dtype=torch.bfloat16)
    w = torch.randn(padded, hidden, dtype=torch.bfloat16) / hidden ** 0.5
    logits = (h @ w.t()).detach().requires_grad_(True)  # [s, V] bf16, as the output layer gives it
    target = torch.randint(0, vocab, (seq,))
    del h, w
    base = reset_peak()
    if which == "ours":
        loss = cross_entropy(logits, target, vocab)
    else:
        loss = F.cross_entropy(logits.float(), target, reduction="none")
    loss.sum().backward()
    peak = rss_mb("VmHWM")
    return {"extra_mb": peak - base, "logits_mb": logits.numel() * logits.element_size() / MB,
            "loss_mean": float(loss.detach().mean())}


def _child(which: str, args: argparse.Namespace) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    out = subprocess.run(
        [sys.executable, __file__, "--child", which, "--seq", str(args.seq), "--vocab", str(args.vocab),
         "--hidden", str(args.hidden)],
        check=True, capture_output=True, text=True, env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq", type=int, default=8192)
    p.add_argument("--vocab", type=int, default=128256)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--child", choices=["ours", "before"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.seq, args.vocab, args.hidden)))
        return
    ours = _child("ours", args)
    before = _child("before", args)
    logits_mb = ours["logits_mb"]
    print(f"s={args.seq} V={args.vocab} (padded to {-(-args.vocab // 128) * 128}): bf16 logits {logits_mb:.0f} MB; "
          f"loss+backward extra: ours {ours['extra_mb']:.0f} MB, before {before['extra_mb']:.0f} MB; "
          f"mean loss ours {ours['loss_mean']:.6f} before {before['loss_mean']:.6f}")
    print(json.dumps({
        "bench": "loss_memory", "seq": args.seq, "vocab": args.vocab,
        "ours_mb": round(ours["extra_mb"], 1), "logits_bf16_mb": round(logits_mb, 1),
        "ratio": round(ours["extra_mb"] / logits_mb, 3), "before_mb": round(before["extra_mb"], 1),
        "before_ratio": round(before["extra_mb"] / logits_mb, 3),
        "loss_abs_diff": abs(ours["loss_mean"] - before["loss_mean"]), "loadavg": os.getloadavg(),
    }))


if __name__ == "__main__":
    main()
