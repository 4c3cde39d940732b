"""Conversion cases run in one process lifetime each (importing megatron costs ~9 s per process):
`prepare` in plain python (build tiny HF models, reference logits from transformers, imports,
TP=1 logits, exports, generation), then the parallel cases under torchrun (`smol_tp3` with 3
processes, `llama_tp2` / `llama_pp2` / `qwen2_pp2` with 2). Rank 0 writes `<out>/<case>.json` / `.npy` files; the
pytest module compares them.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# megatron is imported inside functions: dist_checkpointing's save spawns a helper process that
# re-imports this __main__ module, and a top-level megatron import would cost it ~9 s.

SEQ = 48


def real_text() -> str:
    from pydoc_data.topics import topics

    return topics["assignment"][:1200]


def recipe_for(ckpt: Path, run_dir: Path, parallel: dict, seq: int = SEQ):
    from cpt.config import recipe_from_dict

    model = json.loads((ckpt / "trainer_state.json").read_text())["model"]
    return recipe_from_dict({
        "model": model, "parallel": parallel,
        "training": dict(output_dir=str(run_dir), seq_length=seq, micro_batch_size=1, global_batch_size=1,
                         train_tokens=seq, precision="fp32", tensorboard=False),
    })


def megatron_logits(ckpt: Path, out: Path, parallel: dict, tokens: np.ndarray):
    from megatron_ext.engine import MegatronEngine

    engine = MegatronEngine(recipe_for(ckpt, out / "run", parallel, tokens.shape[1]))
    engine.load(ckpt)
    return engine, engine.logits(tokens)


def hf_logits(hf_dir: Path, tokens: np.ndarray) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.from_numpy(tokens)).logits.numpy()


def greedy(hf_dir: Path, tokens: np.ndarray, n: int = 12) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    out = model.generate(torch.from_numpy(tokens[:, :16]), max_new_tokens=n, do_sample=False)
    return out[0, 16:].tolist()


def prepare(out: Path) -> None:
    from transformers import AutoTokenizer

    from convert_fixtures import tiny_llama_dir, tiny_qwen2_dir
    from cpt.assets import smollm2_hf_dir
    from megatron_ext.convert import hf_to_mcore, mcore_to_hf

    smol = smollm2_hf_dir()
    tok = AutoTokenizer.from_pretrained(smol)
    smol_tokens = np.asarray([tok(real_text())["input_ids"][:SEQ]], dtype=np.int64)
    tiny_tokens = np.random.default_rng(0).integers(0, 1000, size=(2, SEQ), dtype=np.int64)
    np.save(out / "smol_tokens.npy", smol_tokens)
    np.save(out / "tiny_tokens.npy", tiny_tokens)
    models = {"smol": (smol, smol_tokens, 1), "llama": (tiny_llama_dir(out / "hf_llama"), tiny_tokens, 2),
              "qwen2": (tiny_qwen2_dir(out / "hf_qwen2"), tiny_tokens, 1)}
    result = {}
    for name, (hf, tokens, tp) in models.items():
        np.save(out / f"{name}_hf_logits.npy", hf_logits(hf, tokens))
        result[f"{name}_import"] = hf_to_mcore(hf, out / f"{name}_mcore", tp=tp)
    for name in ("smol", "qwen2"):  # TP=1 logits in this process
        _, logits = megatron_logits(out / f"{name}_mcore", out / f"{name}_tp1", {}, models[name][1])
        np.save(out / f"{name}_tp1_logits.npy", logits.numpy())
    shard = {"smol": 200 * 2**20, "llama": 64 * 2**10, "qwen2": 5 * 2**30}
    for name in models:
        result[f"{name}_export"] = mcore_to_hf(out / f"{name}_mcore", out / f"{name}_export", max_shard_bytes=shard[name])
    import torch

    result["llama_bf16_import"] = hf_to_mcore(out / "hf_llama", out / "llama_bf16_mcore", dtype=torch.bfloat16)
    result["llama_bf16_export"] = mcore_to_hf(out / "llama_bf16_mcore", out / "llama_bf16_export")
    result["smol_generate"] = {"source": greedy(smol, smol_tokens), "export": greedy(out / "smol_export", smol_tokens)}
    result["train_from_import"] = train_from_import(out, out / "llama_mcore", out / "hf_llama")
    (out / "prepare.json").write_text(json.dumps(result))


def train_from_import(out: Path, ckpt: Path, hf: Path) -> dict:
    """`training.load: <import>` starts a run at step 0 from the HF weights: its first loss equals
    transformers' loss on the same batch (softmax over the real vocabulary; padding takes no part)."""
    import torch

    from cpt.config import recipe_from_dict
    from cpt.train.loop import Trainer
    from megatron_ext.datasets import build_dataset
    from megatron_ext.engine import MegatronEngine
    from train_fixtures import EOD, write_byte_shards

    train_prefix, _ = write_byte_shards(out / "shards")
    model = json.loads((ckpt / "trainer_state.json").read_text())["model"]
    run = out / "train_run"
    recipe = recipe_from_dict({
        "model": model, "data": {"blend": [[train_prefix, 1.0]], "eod_token_id": EOD},
        "training": dict(output_dir=str(run), seq_length=32, micro_batch_size=2, global_batch_size=2,
                         train_tokens=64, precision="fp32", tensorboard=False, load=str(ckpt)),
    })
    engine = MegatronEngine(recipe)
    t = recipe.training
    train = build_dataset(recipe.data.blend, recipe.data, 2, t.seq_length, t.seed, str(run / "cache"), model["vocab_size"])
    trainer = Trainer(recipe, engine, train, None)
    loaded = trainer.resume()
    step_before = trainer.state.step
    trainer.train()
    trainer.logger.close()
    first = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"][0]
    batch = train.fetch(np.arange(2))
    logits = torch.from_numpy(hf_logits(hf, batch["tokens"].astype(np.int64)))
    nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), torch.from_numpy(batch["labels"]).long().flatten(),
                                            reduction="none")
    mask = torch.from_numpy(batch["loss_mask"]).float().flatten()
    # the trained checkpoint (written by the engine: SwiGLU fc1 saved as gate and up halves) exports
    # to an HF model with the engine's own logits
    from megatron_ext.convert import mcore_to_hf

    tokens = batch["tokens"].astype(np.int64)
    trained = engine.logits(tokens).float().numpy()[..., :model["vocab_size"]]
    mcore_to_hf(run / "checkpoints", out / "trained_export", hf_reference=hf)
    exported = hf_logits(out / "trained_export", tokens)
    return {"loaded": loaded, "step_before": step_before, "loss": first["loss"],
            "reference_loss": float((nll * mask).sum() / mask.sum()),
            "trained_export_max_abs_diff": float(np.abs(trained - exported).max()),
            "trained_changed_max_abs": float(np.abs(trained - logits.numpy()[..., :model["vocab_size"]]).max())}


def smol_tp3(out: Path) -> None:
    engine, logits = megatron_logits(out / "smol_mcore", out / "smol_tp3", {"tensor_model_parallel_size": 3},
                                     np.load(out / "smol_tokens.npy"))
    if engine.layout.rank == 0:
        np.save(out / "smol_tp3_logits.npy", logits.numpy())


def llama_tp2(out: Path) -> None:
    engine, logits = megatron_logits(out / "llama_mcore", out / "llama_tp2", {"tensor_model_parallel_size": 2},
                                     np.load(out / "tiny_tokens.npy"))
    if engine.layout.rank == 0:
        np.save(out / "llama_tp2_logits.npy", logits.numpy())


def pp2_loss(out: Path, name: str) -> None:
    """PP=2 has no single-stage logits: compare the summed token loss of the two-stage model."""
    from megatron_ext.engine import MegatronEngine

    tokens = np.load(out / "tiny_tokens.npy")[:1]
    ckpt = out / f"{name}_mcore"
    engine = MegatronEngine(recipe_for(ckpt, out / f"{name}_pp2", {"pipeline_model_parallel_size": 2}, SEQ - 1))
    engine.load(ckpt)
    batch = {"tokens": tokens[:, :-1], "labels": tokens[:, 1:],
             "loss_mask": np.ones((1, SEQ - 1), dtype=np.float32)}
    loss_sum, n = engine.evaluate(iter([batch]), 1)
    if engine.layout.rank == 0:
        (out / f"{name}_pp2.json").write_text(json.dumps({"loss_sum": loss_sum, "tokens": n}))


CASES = {"prepare": prepare, "smol_tp3": smol_tp3, "llama_tp2": llama_tp2,
         "llama_pp2": lambda out: pp2_loss(out, "llama"),  # untied head on the last stage
         "qwen2_pp2": lambda out: pp2_loss(out, "qwen2")}  # tied: the last stage's copy of the embedding


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("cases", nargs="+", choices=sorted(CASES))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for case in args.cases:
        CASES[case](args.out)


if __name__ == "__main__":
    main()
