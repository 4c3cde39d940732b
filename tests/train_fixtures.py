"""Tiny real training data and recipes for the engine tests.

Documents are the Python help topics (`pydoc_data.topics`, real English prose and code) encoded
as UTF-8 bytes: a 257-token vocabulary (256 bytes + end-of-document) keeps the model tiny while the
text stays real, so the loss has something to learn. Shards are written with megatron-core's own
IndexedDatasetBuilder, the format's reference writer.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

EOD = 256
# 257 real ids, declared as 264 so the TP-padded vocabulary (multiple of 4 x TP) is the same for
# TP=1 and TP=2 (padded rows take no part in the loss since megatron_ext.loss; the fixed size keeps
# the embedding shapes, hence the init draws, alike).
VOCAB = 264


def byte_documents(limit: int | None = None) -> list[np.ndarray]:
    from pydoc_data.topics import topics

    docs = []
    for key in sorted(topics):
        data = np.frombuffer(topics[key].encode("utf-8"), dtype=np.uint8).astype(np.int32)
        docs.append(np.append(data, EOD))
    return docs[:limit] if limit else docs


def write_byte_shards(folder: Path) -> tuple[str, str]:
    """Train and validation shard prefixes (disjoint documents)."""
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    folder.mkdir(parents=True, exist_ok=True)
    docs = byte_documents()
    prefixes = []
    for name, part in (("train", docs[:-12]), ("valid", docs[-12:])):
        prefix = str(folder / f"bytes_{name}")
        builder = IndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
        for doc in part:
            builder.add_document(torch.from_numpy(doc.astype(np.int64)), [len(doc)])
        builder.finalize(prefix + ".idx")
        prefixes.append(prefix)
    return prefixes[0], prefixes[1]


def tiny_recipe(train_prefix: str, valid_prefix: str | None, output_dir: Path, **sections) -> dict:
    """A recipe dict for a ~0.2M-parameter Llama on byte shards; `sections` update parts of it."""
    recipe = {
        "model": dict(
            num_layers=4, hidden_size=64, ffn_hidden_size=176, num_attention_heads=4,
            num_query_groups=2, vocab_size=VOCAB, max_position_embeddings=128,
            make_vocab_size_divisible_by=4,
        ),
        "parallel": {},
        "optimizer": dict(weight_decay=0.01),
        "schedule": dict(lr_init=1e-4, lr_max=3e-3, lr_min=3e-4, warmup_tokens=1024,
                         stable_tokens=4096, decay_tokens=4096),
        "data": dict(blend=[[train_prefix, 1.0]], valid_blend=[[valid_prefix, 1.0]] if valid_prefix else [],
                     eod_token_id=EOD),
        "training": dict(output_dir=str(output_dir), seq_length=64, micro_batch_size=2,
                         global_batch_size=8, train_tokens=64 * 8 * 8, precision="fp32",
                         log_every=1, eval_every=4, eval_batches=2, tensorboard=False),
    }
    for section, values in sections.items():
        recipe.setdefault(section, {}).update(values)
    return recipe


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


# ---------------------------------------------------------------- cpt shards for stream training

SP_EOD = 2  # </s> of Mistral's SentencePiece v1 model
SP_VOCAB = 32000


def write_lang_shards(folder: Path, tokenizer: str | None = None) -> str:
    """One cpt shard (via `cpt preprocess`) of real English (Python help topics, lang en) and Chinese
    (People's Daily, lang zh) documents, tokenized with Mistral's SentencePiece model (or `tokenizer`)."""
    import json

    from cpt import assets
    from cpt.shards.pipeline import PreprocessConfig, run_preprocess

    from pydoc_data.topics import topics

    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"text": topics[k], "lang": "en"} for k in sorted(topics)[:60]]
    rows += [{"text": t, "lang": "zh"} for t in assets.people_daily_documents(limit=60)]
    corpus = folder / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    prefix = str(folder / "bilingual")
    run_preprocess(PreprocessConfig(
        inputs=[str(corpus)], output_prefix=prefix,
        tokenizer=tokenizer or str(assets.mistral_tokenizer_dir() / "tokenizer.model.v1"),
    ))
    return prefix


def stream_recipe(prefix: str, output_dir: Path, **sections) -> dict:
    """tiny_recipe on two language streams of a cpt shard instead of a megatron blend."""
    recipe = tiny_recipe(prefix, None, output_dir, **sections)
    recipe["model"]["vocab_size"] = SP_VOCAB
    recipe["data"] = {
        "streams": [
            {"name": "en", "prefixes": [prefix], "filter": 'lang == "en"', "weight": 0.7, "seed": 1},
            {"name": "zh", "prefixes": [prefix], "filter": 'lang == "zh"', "weight": 0.3, "seed": 2},
        ],
        "eod_token_id": SP_EOD,
        **sections.get("data", {}),
    }
    return recipe


class RecordingSamples:
    """Training samples (a BlendedSamples) whose fetches are recorded as (global index, stream,
    index within stream): what the sample-id tests compare."""

    def __init__(self, inner) -> None:
        self.inner, self.seen = inner, []

    def fetch(self, indices):
        stream, within = self.inner.sample_ids(np.asarray(indices, dtype=np.int64))
        self.seen.extend(zip(map(int, indices), map(int, stream), map(int, within)))
        return self.inner.fetch(indices)

    def __getattr__(self, name):  # prepare_step, state_dict, set_weights, weights_at, ...
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def megatron_world():
    """A one-process megatron world (gloo, TP = PP = 1, seeded) for tests that build megatron modules
    in the test process; an in-process command test may have left one behind, so start afresh."""
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

    from megatron_ext.engine import init_distributed

    init_distributed()
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(1, 1)
    model_parallel_cuda_manual_seed(0)
    yield
    parallel_state.destroy_model_parallel()
