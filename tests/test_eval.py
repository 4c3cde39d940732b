"""`cpt eval`: lm-evaluation-harness on the built-in offline task with the real SmolLM2-135M, and
per-stream held-out perplexity checked against a plain transformers computation, from an HF
folder and from a megatron checkpoint."""
from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from cpt import assets
from cpt.cli import main
from cpt.eval.tasks import ITEMS_PER_LANGUAGE, TAG, builtin_task_dir
from cpt.eval.tasks.next_sentence import SENTENCE_OK, chinese_documents, make_items
from cpt.sampling.holdout import held_out

pytestmark = pytest.mark.slow

HOLDOUT, SEED = 0.5, 7


@pytest.fixture(scope="module")
def model_dir() -> str:
    return str(assets.smollm2_hf_dir())


# ------------------------------------------------------------------------------------- lm-eval


def test_builtin_task_items_are_real_and_fixed():
    folder = builtin_task_dir()  # the cached build (maybe made by an earlier process) the harness reads
    assert (folder / "COMPLETE").is_file() and builtin_task_dir() == folder
    for code in ("en", "zh"):
        rows = [json.loads(line) for line in (folder / f"{code}.jsonl").read_text(encoding="utf-8").splitlines()]
        assert len(rows) == ITEMS_PER_LANGUAGE and len({r["source"] for r in rows}) == ITEMS_PER_LANGUAGE
        for r in rows:
            assert len(r["choices"]) == 4 and len(set(r["choices"])) == 4 and 0 <= r["label"] < 4
            assert r["context"] not in r["choices"]
        config = yaml.safe_load((folder / f"{TAG}_{code}.yaml").read_text())
        assert config["dataset_path"] == "json" and config["task"] == f"{TAG}_{code}"
        assert config["dataset_kwargs"]["data_files"]["test"] == str(folder / f"{code}.jsonl")
    assert {r["label"] for r in rows} == {0, 1, 2, 3}  # the answer is not always in one place
    # rebuilt in this process from People's Daily: the same items as the cached file
    assert make_items("zh", chinese_documents(), ITEMS_PER_LANGUAGE, SENTENCE_OK["zh"]) == rows


def test_lm_eval_on_the_builtin_task_is_in_range_and_repeatable(model_dir, tmp_path, capsys):
    def run(name: str) -> dict:
        out = tmp_path / name
        assert main(["eval", "lm-eval", model_dir, "--tasks", f"{TAG}_en", "--limit", "2", "--batch-size", "8",
                     "--device", "cpu", "--out", str(out)]) == 0
        return json.loads(out.read_text())

    first, second = run("a.json"), run("b.json")
    metrics = first["tasks"][f"{TAG}_en"]
    assert metrics["samples"] == 2 and first["limit"] == 2 and first["lm_eval_version"] == "0.4.13"
    assert first["model"] == str(Path(model_dir).resolve())
    for key in ("acc", "acc_norm"):
        assert 0.0 <= metrics[key] <= 1.0 and metrics[key] in (0.0, 0.5, 1.0)
    assert second["tasks"] == first["tasks"]
    assert f"{TAG}_en: acc=" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------- ppl


@pytest.fixture(scope="module")
def shard(tmp_path_factory, model_dir) -> tuple[str, list[dict]]:
    """A cpt shard (via `cpt preprocess`, SmolLM2's tokenizer) of short real English and Chinese
    documents with a `topic` column; returns the prefix and the corpus rows in shard order."""
    from pydoc_data.topics import topics

    folder = tmp_path_factory.mktemp("eval_shard")
    rows = [{"text": topics[k][:120], "lang": "en", "topic": "code" if i % 3 == 0 else "prose"}
            for i, k in enumerate(sorted(topics)[:12])]
    rows += [{"text": t[:32], "lang": "zh", "topic": "news"} for t in assets.people_daily_documents(limit=10)]
    corpus = folder / "in" / "corpus.jsonl"
    corpus.parent.mkdir()
    corpus.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    prefix = str(folder / "docs")
    assert main(["preprocess", "--input", str(corpus), "--output-prefix", prefix, "--tokenizer", model_dir,
                 "--keep-fields", "topic", "--no-progress"]) == 0
    return prefix, rows


def write_recipe(path: Path, prefix: str, streams: list[dict] | None = None) -> Path:
    """A valid recipe (tiny model section) whose data.streams are the ones evaluated."""
    data = {"streams": streams if streams is not None else [
        {"name": "en_prose", "prefixes": [prefix], "filter": 'lang == "en" and topic == "prose"', "weight": 1.0},
        {"name": "en", "prefixes": [prefix], "filter": 'lang == "en"', "weight": 1.0},
        {"name": "zh", "prefixes": [prefix], "filter": 'lang == "zh"', "weight": 1.0},
        {"name": "code", "prefixes": [prefix], "filter": 'lang == "code"', "weight": 1.0},  # no documents
    ]} if streams != [] else {"blend": [[prefix, 1.0]]}
    recipe = {"model": dict(num_layers=2, hidden_size=64, ffn_hidden_size=128, num_attention_heads=4,
                            vocab_size=49152, max_position_embeddings=256),
              "data": data, "training": dict(seq_length=64, train_tokens=1024)}
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def reference(model_dir, shard) -> list[tuple[float, int] | None]:
    """Plain transformers on every held-out document, one at a time (labels=input_ids): its NLL sum
    (mean loss x scored tokens) and scored tokens; None for the documents training keeps."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prefix, rows = shard
    meta = pq.read_table(f"{prefix}.meta.parquet").to_pylist()
    mask = held_out(np.array([m["doc_id"] for m in meta], dtype=np.uint64), HOLDOUT, SEED)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out: list[tuple[float, int] | None] = []
    for row, held in zip(rows, mask):
        if not held:
            out.append(None)
            continue
        ids = tokenizer(row["text"], return_tensors="pt")["input_ids"]
        with torch.no_grad():
            loss = model(ids, labels=ids).loss.item()
        out.append((loss * (ids.shape[1] - 1), ids.shape[1] - 1))
    return out


def expected(reference, rows: list[dict], keep) -> dict:
    """documents, tokens, token-weighted ppl and mean document ppl of the held-out rows `keep` selects."""
    docs = [ref for ref, row in zip(reference, rows) if ref is not None and keep(row)]
    nll, tokens = sum(d[0] for d in docs), sum(d[1] for d in docs)
    return {"documents": len(docs), "tokens": tokens, "ppl": math.exp(nll / tokens),
            "mean_doc_ppl": sum(math.exp(a / n) for a, n in docs) / len(docs)}


def test_stream_ppl_equals_transformers_on_the_held_out_documents(model_dir, shard, reference, tmp_path, capsys):
    prefix, rows = shard
    recipe = write_recipe(tmp_path / "recipe.yaml", prefix)
    args = ["eval", "ppl", "--model", model_dir, "--recipe", str(recipe), "--valid-holdout", str(HOLDOUT),
            "--valid-holdout-seed", str(SEED), "--device", "cpu", "--max-length", "256"]
    out = tmp_path / "ppl.json"
    assert main([*args, "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    filters = {"en_prose": lambda r: r["lang"] == "en" and r["topic"] == "prose",
               "en": lambda r: r["lang"] == "en", "zh": lambda r: r["lang"] == "zh",
               "overall": lambda r: True}
    for name, keep in filters.items():
        want = expected(reference, rows, keep)
        have = got["overall"] if name == "overall" else got["streams"][name]
        assert 2 <= want["documents"] < sum(map(keep, rows)), name  # a real split: some held out, not all
        assert (have["documents"], have["tokens"]) == (want["documents"], want["tokens"]), name
        assert have["ppl"] == pytest.approx(want["ppl"], rel=1e-4), name
        assert have["mean_doc_ppl"] == pytest.approx(want["mean_doc_ppl"], rel=1e-4), name
    assert got["streams"]["zh"]["ppl"] != pytest.approx(got["streams"]["en"]["ppl"], rel=0.05)
    assert got["streams"]["en"]["matching"] == 12 and got["valid_holdout"] == HOLDOUT
    # the same run again, compared with the first: every stream unchanged, to the last bit
    again = tmp_path / "again.json"
    capsys.readouterr()
    assert main([*args, "--compare", str(out), "--out", str(again)]) == 0
    printed = capsys.readouterr().out
    second = json.loads(again.read_text())
    assert second["streams"] == got["streams"] and second["overall"] == got["overall"]
    assert [r["change_pct"] for r in second["compare"]["rows"]] == [0.0, 0.0, 0.0, None, 0.0]
    assert got["streams"]["code"] == {"documents": 0, "tokens": 0, "nll": 0.0, "ppl": None, "mean_doc_ppl": None,
                                      "skipped": {}, "filter": 'lang == "code"', "matching": 0, "held_out": 0}
    assert "ppl before" in printed and "+0.0%" in printed
    # flat figures, as a sweep eval collects them (every one lower-is-better; a stream with no documents has none)
    assert got["metrics"] == {**{f"{key}/{name}": got["streams"][name][key] for name in ("en_prose", "en", "zh")
                                 for key in ("ppl", "mean_doc_ppl")},
                              "ppl": got["overall"]["ppl"], "mean_doc_ppl": got["overall"]["mean_doc_ppl"]}
    assert "higher_is_better" not in got


def test_stream_ppl_of_a_megatron_checkpoint_equals_its_hf_source(model_dir, shard, tmp_path, capsys):
    """A tiny random Llama with SmolLM2's tokenizer, imported to megatron: `cpt eval ppl` on the
    checkpoint (exported on the fly, tokenizer from the import's hf/ copy) equals the HF folder's."""
    from transformers import LlamaConfig, LlamaForCausalLM

    prefix, _ = shard
    hf = tmp_path / "tiny_hf"
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=49152, max_position_embeddings=512)
                     ).save_pretrained(hf)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (Path(model_dir) / name).exists():
            shutil.copy(Path(model_dir) / name, hf / name)
    ckpt = tmp_path / "tiny_mcore"
    assert main(["convert", "hf-to-mcore", str(hf), str(ckpt)]) == 0
    recipe = write_recipe(tmp_path / "recipe.yaml", prefix)
    common = ["--recipe", str(recipe), "--valid-holdout", str(HOLDOUT), "--valid-holdout-seed", str(SEED),
              "--device", "cpu", "--max-length", "256"]
    assert main(["eval", "ppl", "--model", str(hf), *common, "--out", str(tmp_path / "hf.json")]) == 0
    assert main(["eval", "ppl", "--model", str(ckpt), *common, "--out", str(tmp_path / "ckpt.json")]) == 0
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("hf.json", "ckpt.json"))
    assert b["checkpoint"] == str(ckpt) and b["checkpoint_step"] == 0
    for name in ("en_prose", "en", "zh"):
        assert b["streams"][name]["tokens"] == a["streams"][name]["tokens"]
        assert b["streams"][name]["ppl"] == pytest.approx(a["streams"][name]["ppl"], rel=1e-5)
    assert not list(tmp_path.glob(".cpt-eval-export-*"))  # the temporary export is gone
    # without the import's hf/ copy nothing records a tokenizer: the error says what to pass
    bare = tmp_path / "bare"
    shutil.copytree(ckpt, bare)
    shutil.rmtree(bare / "hf")
    capsys.readouterr()
    assert main(["eval", "ppl", "--model", str(bare), *common, "--out", str(tmp_path / "x.json")]) == 2
    assert "pass --hf-reference" in capsys.readouterr().err


def test_held_out_documents_are_the_training_split_and_capped_evenly(shard):
    from cpt.config import StreamSpec
    from cpt.eval.heldout import heldout_documents

    prefix, rows = shard
    specs = [StreamSpec(name="en", prefixes=[prefix], weight=1.0, filter='lang == "en"'),
             StreamSpec(name="all", prefixes=[prefix], weight=1.0)]
    meta = pq.read_table(f"{prefix}.meta.parquet").to_pylist()
    held = held_out(np.array([m["doc_id"] for m in meta], dtype=np.uint64), HOLDOUT, SEED)
    en, every = heldout_documents(specs, HOLDOUT, SEED)
    assert list(en.indices) == [i for i, row in enumerate(rows) if held[i] and row["lang"] == "en"]
    assert list(every.indices) == list(np.flatnonzero(held)) and set(every.prefixes) == {prefix}
    assert (en.matching, every.matching, every.held_out) == (12, len(rows), int(held.sum()))
    capped = heldout_documents(specs, HOLDOUT, SEED, max_documents=3)[1]
    n = len(every.indices)
    assert capped.indices == tuple(every.indices[k * n // 3] for k in range(3)) and capped.held_out == n
    assert heldout_documents(specs, HOLDOUT, SEED + 1)[1].indices != every.indices  # the seed matters


def test_held_out_documents_read_only_the_columns_filters_and_the_hash_need(shard, monkeypatch):
    from cpt.config import StreamSpec
    from cpt.eval.heldout import heldout_documents
    from cpt.sampling.documents import DocumentTable

    prefix, _ = shard
    read = []
    original = DocumentTable.from_shards.__func__

    def recording(cls, prefixes, columns=None, cache=None):
        read.append(columns)
        return original(cls, prefixes, columns, cache)

    monkeypatch.setattr(DocumentTable, "from_shards", classmethod(recording))
    specs = [StreamSpec(name="en", prefixes=[prefix], weight=1.0, filter='lang == "en"'),
             StreamSpec(name="all", prefixes=[prefix], weight=1.0)]
    en, every = heldout_documents(specs, HOLDOUT, SEED)
    assert read == [["doc_id", "lang"]] and en.held_out < every.held_out  # one table, two columns (not all)


def test_a_stream_share_overrides_the_recipe_share(shard):
    from cpt.config import StreamSpec
    from cpt.eval.heldout import heldout_documents

    prefix, rows = shard
    meta = pq.read_table(f"{prefix}.meta.parquet").to_pylist()
    half = held_out(np.array([m["doc_id"] for m in meta], dtype=np.uint64), 0.5, SEED)
    specs = [StreamSpec(name="en", prefixes=[prefix], weight=1.0, filter='lang == "en"', valid_holdout=0.0),
             StreamSpec(name="all", prefixes=[prefix], weight=1.0, valid_holdout=0.5)]
    # en is not validated (share 0); "all" holds out half, whatever the recipe-wide share
    for fraction in (0.0, HOLDOUT):
        (every,) = heldout_documents(specs, fraction, SEED)
        assert every.name == "all" and list(every.indices) == list(np.flatnonzero(half))
    with pytest.raises(ValueError, match="no document is held out"):
        heldout_documents(specs[:1], HOLDOUT, SEED)


# -------------------------------------------------------------------------------------- errors


def test_errors_are_one_line_with_exit_2(model_dir, shard, tmp_path, capsys):
    prefix, _ = shard
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(Path(model_dir) / "config.json", broken / "config.json")
    shutil.copy(Path(model_dir) / "tokenizer.json", broken / "tokenizer.json")
    recipe = write_recipe(tmp_path / "recipe.yaml", prefix)
    base = ["--valid-holdout", "0.5", "--out", str(tmp_path / "x.json")]

    def fails(argv: list[str], *needles: str) -> None:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and all(n in err for n in needles), err

    fails(["eval", "ppl", "--model", str(broken), "--recipe", str(recipe), *base], "broken is missing weights")
    fails(["eval", "lm-eval", str(broken), "--tasks", TAG, "--out", str(tmp_path / "x.json")],
          "broken is missing weights")
    fails(["eval", "ppl", "--model", str(tmp_path / "nowhere"), "--recipe", str(recipe), *base], "does not exist")
    fails(["eval", "ppl", "--model", model_dir, "--recipe", str(write_recipe(tmp_path / "blend.yaml", prefix, [])),
           *base], "has no data.streams")
    fails(["eval", "ppl", "--model", model_dir, "--recipe", str(recipe), "--out", str(tmp_path / "x.json")],
          "data.valid_holdout")
    fails(["eval", "ppl", "--model", model_dir, "--recipe", str(recipe), *base, "--compare", str(recipe)],
          "--compare", "not JSON")
    (tmp_path / "other.json").write_text('{"tasks": {}}')
    fails(["eval", "ppl", "--model", model_dir, "--recipe", str(recipe), *base, "--compare",
           str(tmp_path / "other.json")], "not a `cpt eval ppl` result")
    bad_filter = write_recipe(tmp_path / "bad.yaml", prefix,
                              [{"name": "x", "prefixes": [prefix], "filter": 'langg == "en"', "weight": 1.0}])
    fails(["eval", "ppl", "--model", model_dir, "--recipe", str(bad_filter), *base], "stream 'x'", "unknown column")
    fails(["eval", "lm-eval", model_dir, "--tasks", f"{TAG}_xx", "--out", str(tmp_path / "x.json")],
          f"unknown lm-eval task '{TAG}_xx'", "did you mean")
    assert not (tmp_path / "x.json").exists()


def test_missing_lm_eval_names_the_pip_command(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # what `import lm_eval` meets when it is not installed
    assert main(["eval", "lm-eval", model_dir, "--tasks", TAG, "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert 'pip install "lm-eval==0.4.13"' in err and "cpt[eval]" in err
