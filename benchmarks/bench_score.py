"""Benchmark of `cpt score`: tokens/s of our scorer against two transformers baselines on the same
documents and model, in one run; plus topic-tagging docs/s.

Ours = `PerplexityAnnotator` as `cpt score` runs it (batch tokenization, its device's batching policy
- length-bucketed batches up to `--max-batch-tokens`, 65536 on GPU, 2048 on CPU, no attention mask - head
applied only to scored positions). Naive = for each document, `model(ids, labels=ids)` (the usual
recipe). Padded = transformers batched the plain way: `--padded-batch` documents in input order,
padded, attention mask, no bucketing. All in the same dtype on the same device (bf16 on GPU, fp32 on
CPU), all including tokenization, interleaved chunk by chunk (order rotating) so all three see the
same load. The maximum relative ppl difference against naive is printed as a check that they compute
the same thing; the load average is printed beside the figures. `--megatron` adds the same annotator
over a cpt megatron checkpoint (`megatron_ext.scoring`; `import` converts --model first). Tagging =
`TopicAnnotator` with each encoder of --encoders (MiniLM at 128 tokens, the multilingual USE at 512
characters), in the same run, in alternating order over two rounds (the better round of each is reported).

Defaults use the real assets (SmolLM2-135M, all-MiniLM-L6-v2, USE multilingual v3, People's Daily + Wikipedia). On a
machine without them, pass --model/--encoders folders and --corpus (jsonl with "text"); throughput does
not depend on the weights' values, so a folder with the same config and tokenizer measures the same.
Last printed line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def corpus(n: int) -> list[str]:
    """Half People's Daily documents, half Wikipedia passages (~400-1200 characters each)."""
    from cpt import assets

    zh = assets.people_daily_documents(limit=n // 2)
    en = []
    for _, text in assets.enwiki_plain_articles():
        en += [p.strip()[:1200] for p in text.split("\n") if len(p.strip()) >= 400]
        if len(en) >= n - len(zh):
            break
    return zh + en[: n - len(zh)]


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Naive:
    """The per-document loop: `model(ids, labels=ids)` for each document (the usual recipe)."""

    def __init__(self, model, tokenizer, device: str, max_doc_tokens: int) -> None:
        self.model, self.tokenizer, self.device, self.max_doc_tokens = model, tokenizer, device, max_doc_tokens

    def __call__(self, texts: list[str]) -> list[float]:
        import torch

        out = []
        with torch.inference_mode():
            for text in texts:
                ids = self.tokenizer(text, return_tensors="pt")["input_ids"][:, :self.max_doc_tokens].to(self.device)
                out.append(math.exp(self.model(ids, labels=ids).loss.float().item()))
        return out


class PaddedBatches:
    """transformers batched the plain way: `batch_size` documents in input order, padded to the
    longest (no length bucketing), attention mask, per-document mean NLL from the logits."""

    def __init__(self, model, tokenizer, device: str, max_doc_tokens: int, batch_size: int) -> None:
        self.model, self.device, self.max_doc_tokens, self.batch_size = model, device, max_doc_tokens, batch_size
        self.tokenizer = tokenizer
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"

    def __call__(self, texts: list[str]) -> list[float]:
        import torch

        out = []
        with torch.inference_mode():
            for k in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(texts[k:k + self.batch_size], return_tensors="pt", padding=True, truncation=True,
                                     max_length=self.max_doc_tokens).to(self.device)
                logits = self.model(**enc).logits[:, :-1].float()
                labels, mask = enc["input_ids"][:, 1:], enc["attention_mask"][:, 1:].float()
                nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
                out += torch.exp((nll * mask).sum(1) / mask.sum(1)).tolist()
        return out


class Ours:
    """`PerplexityAnnotator` as `cpt score` runs it (its device's batching policy)."""

    def __init__(self, model_dir: str, device: str, dtype_name: str, max_doc_tokens: int,
                 max_batch_tokens: int | None) -> None:
        from cpt.annotate.perplexity import PerplexityAnnotatorFactory

        self.annotator = PerplexityAnnotatorFactory(model_dir, device=device, dtype=dtype_name,
                                                    max_length=max_doc_tokens, max_batch_tokens=max_batch_tokens,
                                                    max_doc_tokens=max_doc_tokens)()

    def __call__(self, texts: list[str]) -> list[float]:
        from cpt.annotate.docs import Doc

        return [r.values["ppl"] for r in self.annotator([Doc(str(i), t) for i, t in enumerate(texts)])]


def score_methods(model_dir: str, texts: list[str], device: str, dtype_name: str, max_doc_tokens: int,
                  max_batch_tokens: int | None, padded_batch: int, chunk: int) -> dict:
    """ours / naive / padded over the same documents, interleaved: chunk by chunk, each method in
    turn, the order rotating, so all three see the same load on a shared machine. Seconds per
    method are summed; each method's ppl list is in document order."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype_name)).to(device).eval()
    methods = {"ours": Ours(model_dir, device, dtype_name, max_doc_tokens, max_batch_tokens),
               "naive": Naive(model, tokenizer, device, max_doc_tokens),
               "padded": PaddedBatches(model, tokenizer, device, max_doc_tokens, padded_batch)}
    for method in methods.values():  # warm-up
        method(texts[:2])
    results = {name: {"ppl": [], "seconds": 0.0} for name in methods}
    names = list(methods)
    for c, k in enumerate(range(0, len(texts), chunk)):
        for name in names[c % 3:] + names[:c % 3]:
            sync(device)
            start = time.perf_counter()
            ppl = methods[name](texts[k:k + chunk])
            sync(device)
            results[name]["seconds"] += time.perf_counter() - start
            results[name]["ppl"] += ppl
        print(f"[score] {k + chunk}/{len(texts)} docs: " + ", ".join(
            f"{name} {r['seconds']:.1f}s" for name, r in results.items()), file=sys.stderr, flush=True)
    tokens = sum(min(len(ids), max_doc_tokens) - 1 for ids in methods["ours"].annotator.encode(texts))
    for name in names:
        results[name]["tokens_per_s"] = tokens / results[name]["seconds"]
    results["tokens"] = tokens
    return results


def megatron(checkpoint: str, model_dir: str, texts: list[str], device: str, dtype_name: str, max_doc_tokens: int,
             max_batch_tokens: int | None, chunk: int) -> tuple[list[float], int, float]:
    """`cpt score --model <megatron checkpoint>`: the same annotator over `megatron_ext.scoring`.
    `checkpoint` "import" converts `model_dir` with `cpt convert hf-to-mcore` into a temporary folder."""
    import tempfile

    from cpt.annotate.docs import Doc
    from cpt.annotate.perplexity import PerplexityAnnotatorFactory
    from megatron_ext.scoring import tokenizer_dir

    if checkpoint == "import":
        from megatron_ext.convert import hf_to_mcore

        checkpoint = str(Path(tempfile.mkdtemp(prefix="bench_score_")) / "import")
        hf_to_mcore(model_dir, checkpoint, dtype=None)
    annotator = PerplexityAnnotatorFactory(checkpoint, "megatron_ext.scoring:MegatronScorer", device, dtype_name,
                                           max_doc_tokens, None, max_batch_tokens, max_doc_tokens,
                                           str(tokenizer_dir(checkpoint)))()
    annotator([Doc("warm", texts[0])])
    docs = [Doc(str(i), t) for i, t in enumerate(texts)]
    sync(device)
    start = time.perf_counter()
    results = []
    for k in range(0, len(docs), chunk):
        results += annotator(docs[k:k + chunk])
    sync(device)
    seconds = time.perf_counter() - start
    tokens = sum(min(len(ids), max_doc_tokens) - 1 for ids in annotator.encode(texts))
    return [r.values["ppl"] for r in results], tokens, seconds


def tagging(encoders: list[str], texts: list[str], device: str) -> dict[str, float]:
    """docs/s of `TopicAnnotator` per encoder (a name of cpt.annotate.encoder.ENCODERS or an HF folder)."""
    from cpt.annotate import taxonomy
    from cpt.annotate.classifier import TopicClassifier
    from cpt.annotate.docs import Doc, detect_lang
    from cpt.annotate.tagging import TopicAnnotator

    docs = [Doc(str(i), t, detect_lang(t)) for i, t in enumerate(texts)]
    annotators = {}
    for name in encoders:
        annotators[name] = TopicAnnotator(TopicClassifier.from_encoder(name, taxonomy.load(), device, 128), batch_size=64)
        annotators[name](docs[:8])
    best = {name: 0.0 for name in encoders}
    for order in (encoders, encoders[::-1]):
        for name in order:
            sync(device)
            start = time.perf_counter()
            for k in range(0, len(docs), 256):
                annotators[name](docs[k:k + 256])
            sync(device)
            best[name] = max(best[name], len(docs) / (time.perf_counter() - start))
    return {name: round(v, 2) for name, v in best.items()}


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="causal LM folder (default: SmolLM2-135M from the assets)")
    p.add_argument("--encoders", default="minilm,use-m3",
                   help="comma-separated tagging encoders: minilm, use-m3 or HF folders (default: both registered)")
    p.add_argument("--corpus", default=None, help="jsonl with a text field (default: People's Daily + Wikipedia)")
    p.add_argument("--docs", type=int, default=None, help="documents (default 48 on CPU, 2000 on GPU)")
    p.add_argument("--max-doc-tokens", type=int, default=256, help="tokens scored per document (both sides)")
    p.add_argument("--max-batch-tokens", type=int, default=None, help="ours (default: its device's policy)")
    p.add_argument("--padded-batch", type=int, default=None, help="documents per padded batch (default 8 CPU, 64 GPU)")
    p.add_argument("--chunk", type=int, default=None, help="documents per interleaved turn (default 8 CPU, 500 GPU)")
    p.add_argument("--megatron", default=None,
                   help="also score with a cpt megatron checkpoint (a path, or 'import' to convert --model first)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    gpu = args.device.startswith("cuda")
    n = args.docs or (2000 if gpu else 48)
    if args.corpus:
        texts = [json.loads(line)["text"] for line in Path(args.corpus).read_text().splitlines() if line.strip()][:n]
    else:
        texts = corpus(n)
    from cpt import assets

    model_dir = args.model or str(assets.smollm2_hf_dir())
    dtype_name = "bfloat16" if gpu else "float32"
    res = score_methods(model_dir, texts, args.device, dtype_name, args.max_doc_tokens, args.max_batch_tokens,
                        args.padded_batch or (64 if gpu else 8), args.chunk or (500 if gpu else 8))
    o_tokens = n_tokens = res["tokens"]
    n_ppl = res["naive"]["ppl"]
    diff = max(abs(a / b - 1) for a, b in zip(res["ours"]["ppl"], n_ppl))
    p_diff = max(abs(a / b - 1) for a, b in zip(res["padded"]["ppl"], n_ppl))
    extra = {}
    if args.megatron:
        m_ppl, m_tokens, m_s = megatron(args.megatron, model_dir, texts, args.device, dtype_name, args.max_doc_tokens,
                                        args.max_batch_tokens, 256)
        assert m_tokens == n_tokens, (m_tokens, n_tokens)
        m_diff = max(abs(a / b - 1) for a, b in zip(m_ppl, n_ppl))
        print(f"megatron: {m_s:.2f}s  {m_tokens / m_s:,.0f} tokens/s  (max relative ppl difference vs naive {m_diff:.2e})")
        extra = {"megatron_tokens_per_s": round(m_tokens / m_s, 1), "megatron_max_rel_diff": float(f"{m_diff:.3g}")}
    tag = tagging(args.encoders.split(","), texts, args.device)
    print(f"device {args.device} ({torch.cuda.get_device_name() if gpu else 'cpu'}), {dtype_name}, {len(texts)} docs, "
          f"{o_tokens} scored tokens")
    for name in ("ours", "naive", "padded"):
        print(f"{name + ':':7s} {res[name]['seconds']:.2f}s  {res[name]['tokens_per_s']:,.0f} tokens/s")
    print(f"max relative ppl difference vs naive: ours {diff:.2e}, padded {p_diff:.2e}")
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("tagging: " + ", ".join(f"{name} {v:,.1f} docs/s" for name, v in tag.items()))
    o, nv, pd = (res[k]["tokens_per_s"] for k in ("ours", "naive", "padded"))
    print(json.dumps({"bench": "score", "ours_tokens_per_s": round(o, 1), "naive_tokens_per_s": round(nv, 1),
                      "ratio": round(o / nv, 3), "padded_tokens_per_s": round(pd, 1), "ratio_padded": round(o / pd, 3),
                      "loadavg": [round(x, 2) for x in load],
                      "tag_docs_per_s": {k: round(v, 2) for k, v in tag.items()}, "device": args.device, "docs": len(texts), "tokens": o_tokens, **extra}))


if __name__ == "__main__":
    main()
