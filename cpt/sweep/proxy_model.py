"""The proxy model of `cpt sweep prepare --size tiny`: a small Llama pre-trained once on English.

Llama-3-SynE chose its recipe on a small proxy before the big run. Ours must train a sweep arm in
minutes on two CPU cores, yet start from a model that already knows some English, as a real base
model does (a random model has nothing to forget, and every arm would only measure how fast it
learns the alphabet). So the proxy is a few-million-parameter Llama with its own small byte-level
BPE vocabulary, trained on the sweep corpus (Chinese, English and code alike: SmolLM2's 49k-entry
vocabulary would make the output layer most of the proxy's compute, and it spends two to three
tokens per Chinese character), then pre-trained briefly, once, on the English side of that corpus
(gensim's Wikipedia articles and the Python reference) with plain PyTorch on the HF model. The
Chinese rows of its embedding are what continual pre-training has to learn, as for a real base
model meeting a new language.

The result is an HF folder cached under `cpt.assets.cache_root()`, in a folder named by a hash of
`ProxyConfig` (and a version constant): a changed config builds a new folder, an unchanged one is
reused, and the marker (the config, the training figures) is written last, so a half-built folder
is never used. Training is seeded and single-threaded, so on one machine and package set the folder
is a function of the config and the installed assets (builds repeat byte for byte). Another CPU or
library version can move the last digits of the weights, and everything trained from the proxy with
them: compare proxy findings across preparations with that in mind (docs/proxy says where it showed).
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

PROXY_VERSION = 1
MARKER = "cpt-proxy-complete.json"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyConfig:
    """The proxy's architecture and its one-off English pre-training."""

    hidden_size: int = 128
    """model width"""
    num_layers: int = 4
    """transformer layers"""
    num_attention_heads: int = 4
    """query heads (head dim = hidden_size / heads)"""
    num_key_value_heads: int = 2
    """key/value heads (grouped-query attention, as SmolLM2)"""
    intermediate_size: int = 384
    """SwiGLU hidden size"""
    seq_length: int = 128
    """pre-training sequence length (the sweeps train at this length too)"""
    batch_size: int = 16
    """sequences per pre-training step"""
    steps: int = 400
    """pre-training steps (AdamW, linear warmup then cosine to lr/10)"""
    lr: float = 2.0e-3
    """peak learning rate"""
    warmup_steps: int = 40
    """warmup steps"""
    seed: int = 0
    """initialisation and data order"""
    english_chars: int = 3_000_000
    """characters of English text read (Wikipedia articles first, then the Python reference)"""
    vocab_size: int = 8192
    """BPE vocabulary (a multiple of 128, as megatron pads it)"""
    tokenizer_chars: int = 4_000_000
    """characters the BPE is trained on: a third each of People's Daily, English, LeetCode problems"""

    def key(self) -> str:
        """Short hash of the config and the version: the cache folder's name."""
        blob = json.dumps({"version": PROXY_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.blake2b(blob.encode(), digest_size=6).hexdigest()


@functools.lru_cache(maxsize=1)
def _english_sources() -> tuple[str, ...]:
    """Wikipedia articles (title + plain text), then pydoc topics; read once per process (the markup
    parsing of the articles is the slow part)."""
    import pydoc_data.topics

    from cpt.assets import enwiki_plain_articles

    return (*(f"{t}\n\n{x}" for t, x in enwiki_plain_articles()),
            *(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics)))


def english_texts(limit_chars: int) -> Iterator[str]:
    """The English side of the sweep corpus, in a fixed order: Wikipedia articles, then pydoc topics."""
    n = 0
    for text in _english_sources():
        if n >= limit_chars:
            return
        text = text[: limit_chars - n]
        n += len(text)
        yield text


SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
"""SmolLM2's special tokens (ids 0, 1, 2): end of document first, so it is the EOD token of shards."""


def tokenizer_texts(limit_chars: int) -> Iterator[str]:
    """A third of `limit_chars` each of Chinese (People's Daily), English and code (LeetCode problems)."""
    from cpt.assets import leetcode_problems_dir, people_daily_documents
    from cpt.synth.code_tasks import read_problems

    share = limit_chars // 3
    zh = people_daily_documents()
    code = (p.text for p in read_problems(leetcode_problems_dir(), 100_000))
    for source in (iter(zh), english_texts(share), code):
        n = 0
        for text in source:
            if n >= share:
                break
            n += len(text)
            yield text


def train_tokenizer(cfg: "ProxyConfig", out: Path) -> Any:
    """A byte-level BPE (GPT-2 pre-tokenization, as SmolLM2's) trained on `tokenizer_texts`, saved as a
    transformers tokenizer in `out`; returns it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=cfg.vocab_size, special_tokens=list(SPECIAL_TOKENS), min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(tokenizer_texts(cfg.tokenizer_chars), trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=SPECIAL_TOKENS[0], eos_token=SPECIAL_TOKENS[0],
                                        unk_token=SPECIAL_TOKENS[0], pad_token=SPECIAL_TOKENS[0],
                                        model_max_length=8192)
    tokenizer.save_pretrained(out)
    return tokenizer


def pack_tokens(texts: Iterator[str], tokenizer: Any, seq_length: int) -> "Any":
    """Every text tokenized, EOS-separated, concatenated and cut into rows of seq_length + 1 tokens."""
    import numpy as np

    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    rows = len(ids) // (seq_length + 1)
    if rows == 0:
        raise ValueError(f"proxy pre-training: {len(ids)} tokens do not fill one sequence of {seq_length + 1}")
    return np.asarray(ids[: rows * (seq_length + 1)], dtype=np.int64).reshape(rows, seq_length + 1)


def _llama_config(cfg: ProxyConfig, tokenizer: Any) -> Any:
    from transformers import LlamaConfig

    eos = tokenizer.eos_token_id

    return LlamaConfig(
        hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_attention_heads, num_key_value_heads=cfg.num_key_value_heads,
        vocab_size=cfg.vocab_size, max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
    )


def _lr_at(cfg: ProxyConfig, step: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def pretrain(model: Any, rows: Any, cfg: ProxyConfig, log_every: int = 50) -> dict[str, Any]:
    """Train `model` on `rows` (seeded order, held-out last 5%); returns the loss figures."""
    import numpy as np
    import torch

    held = max(1, len(rows) // 20)
    train, valid = rows[:-held], torch.from_numpy(rows[-held:][: cfg.batch_size])
    order = np.random.default_rng(cfg.seed).permutation(max(cfg.steps * cfg.batch_size, len(train))) % len(train)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.1)
    model.train()
    losses, t0 = [], time.perf_counter()
    for step in range(cfg.steps):
        batch = torch.from_numpy(train[order[step * cfg.batch_size:(step + 1) * cfg.batch_size]])
        for group in opt.param_groups:
            group["lr"] = _lr_at(cfg, step)
        loss = _loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if log_every and (step + 1) % log_every == 0:
            print(f"[proxy] step {step + 1}/{cfg.steps} loss {np.mean(losses[-log_every:]):.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    model.eval()
    with torch.no_grad():
        valid_loss = float(_loss(model, valid))
    return {"train_rows": int(len(train)), "first_loss": round(losses[0], 4),
            "final_train_loss": round(float(np.mean(losses[-20:])), 4), "valid_loss": round(valid_loss, 4),
            "valid_ppl": round(math.exp(valid_loss), 2), "seconds": round(time.perf_counter() - t0, 1)}


def _loss(model: Any, batch: Any) -> Any:
    import torch.nn.functional as F

    logits = model(input_ids=batch[:, :-1]).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1))


def build_proxy(out: str | Path, cfg: ProxyConfig) -> dict[str, Any]:
    """Build the proxy HF folder (tokenizer, pre-trained weights) at `out`, atomically with its marker
    last; returns the marker."""
    import torch
    from transformers import LlamaForCausalLM

    from cpt.io import atomic_dir, write_json_atomic

    with atomic_dir(out) as tmp:
        t0 = time.perf_counter()
        tokenizer = train_tokenizer(cfg, tmp)
        tokenizer_seconds = round(time.perf_counter() - t0, 1)
        rows = pack_tokens(english_texts(cfg.english_chars), tokenizer, cfg.seq_length)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one thread: the same floats run to run, a fair share of a busy CPU
        try:
            torch.manual_seed(cfg.seed)
            model = LlamaForCausalLM(_llama_config(cfg, tokenizer))
            figures = pretrain(model, rows, cfg)
        finally:
            torch.set_num_threads(threads)
        model.save_pretrained(tmp, safe_serialization=True)
        marker = {"version": PROXY_VERSION, "key": cfg.key(), "config": asdict(cfg),
                  "parameters": sum(p.numel() for p in model.parameters()),
                  "tokenizer_seconds": tokenizer_seconds, "pretraining": figures}
        write_json_atomic(tmp / MARKER, marker, indent=1)
    return marker


def proxy_hf_dir(cfg: ProxyConfig | None = None) -> Path:
    """The cached proxy folder for `cfg` (default config), built on first use."""
    from cpt.assets import cache_root

    cfg = cfg or ProxyConfig()
    out = cache_root() / f"proxy-llama-{cfg.key()}"
    marker = out / MARKER
    if marker.is_file():
        saved = json.loads(marker.read_text())
        if saved.get("version") == PROXY_VERSION and saved.get("config") == asdict(cfg):
            return out
    build_proxy(out, cfg)
    return out


__all__ = ["MARKER", "PROXY_VERSION", "SPECIAL_TOKENS", "ProxyConfig", "build_proxy", "english_texts", "pack_tokens",
           "pretrain", "proxy_hf_dir", "tokenizer_texts", "train_tokenizer"]
