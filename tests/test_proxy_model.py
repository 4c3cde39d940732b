"""The proxy model of `cpt sweep prepare --size tiny`, at a size of a few thousand parameters: its own
BPE (lossless on Chinese, English and code), pre-training that lowers the held-out loss, and the cache
keyed by the config (reused when equal, rebuilt when it changes, never read half-written)."""
from __future__ import annotations

import json
import math

import pytest

from cpt.sweep.proxy_model import MARKER, ProxyConfig, build_proxy, proxy_hf_dir

TINY = ProxyConfig(hidden_size=16, num_layers=1, num_attention_heads=2, num_key_value_heads=1, intermediate_size=32,
                   seq_length=32, batch_size=8, steps=40, warmup_steps=4, lr=1e-2, english_chars=60_000,
                   vocab_size=512, tokenizer_chars=60_000)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("proxy") / "hf"
    return out, build_proxy(out, TINY)


def test_tokenizer_round_trips_every_language(built):
    from transformers import AutoTokenizer

    out, _ = built
    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) == 512 and tok.eos_token == "<|endoftext|>" and tok.eos_token_id == 0
    for text in ["人民日报社论：经济发展稳步推进。", "The Moon orbits the Earth.", "def f(x):\n    return x * 2\n"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text and max(ids) < 512


def test_pretraining_lowers_the_held_out_loss(built):
    from transformers import AutoModelForCausalLM

    out, marker = built
    figures = marker["pretraining"]
    assert marker["parameters"] < 20_000 and marker["config"]["vocab_size"] == 512
    assert figures["valid_loss"] < figures["first_loss"] - 0.5 and figures["first_loss"] == pytest.approx(math.log(512), abs=0.5)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size == 512 and model.config.tie_word_embeddings
    assert json.loads((out / MARKER).read_text()) == marker


def test_cache_is_keyed_by_the_config(tmp_path, monkeypatch):
    import cpt.sweep.proxy_model as pm

    monkeypatch.setenv("CPT_CACHE", str(tmp_path))
    builds = []
    real = pm.build_proxy
    monkeypatch.setattr(pm, "build_proxy", lambda out, cfg: builds.append(cfg.key()) or real(out, cfg))
    small = ProxyConfig(**{**{f: getattr(TINY, f) for f in TINY.__slots__}, "steps": 2, "warmup_steps": 1})
    first = proxy_hf_dir(small)
    assert first.name == f"proxy-llama-{small.key()}" and proxy_hf_dir(small) == first and len(builds) == 1
    other = ProxyConfig(**{**{f: getattr(small, f) for f in small.__slots__}, "seed": 1})
    assert other.key() != small.key() and proxy_hf_dir(other) != first and len(builds) == 2
    (first / MARKER).unlink()  # a folder without its marker is not trusted: rebuilt
    assert proxy_hf_dir(small) == first and len(builds) == 3
