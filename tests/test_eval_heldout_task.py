"""The held-out next-sentence task: items only from documents the recipe holds out, reproducible,
provenance recorded, and run through `cpt eval lm-eval --heldout-from`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cpt import assets, shards
from cpt.cli import main
from cpt.eval.tasks.heldout import build_heldout_task, heldout_task_name
from cpt.eval.tasks.next_sentence import chinese_paragraphs
from cpt.sampling.holdout import held_out

HOLDOUT, SEED = 0.5, 3


@pytest.fixture(scope="module")
def model_dir() -> str:
    return str(assets.smollm2_hf_dir())


@pytest.fixture(scope="module")
def zh_shard(tmp_path_factory, model_dir) -> tuple[str, list[str]]:
    """60 People's Daily documents in one shard, topics a/b alternating; the prefix and the texts."""
    folder = tmp_path_factory.mktemp("heldout_task")
    texts = assets.people_daily_documents(limit=60)
    corpus = folder / "in" / "zh.jsonl"
    corpus.parent.mkdir()
    corpus.write_text("".join(json.dumps({"text": t, "lang": "zh", "topic": "ab"[i % 2]}, ensure_ascii=False) + "\n"
                              for i, t in enumerate(texts)), encoding="utf-8")
    prefix = str(folder / "zh")
    assert main(["preprocess", "--input", str(corpus), "--output-prefix", prefix, "--tokenizer", model_dir,
                 "--keep-fields", "topic", "--no-progress"]) == 0
    return prefix, texts


def recipe(path: Path, prefix: str) -> Path:
    streams = [{"name": f"zh_{t}", "prefixes": [prefix], "filter": f'topic == "{t}"', "weight": 1.0} for t in "ab"]
    path.write_text(yaml.safe_dump({
        "model": dict(num_layers=2, hidden_size=64, ffn_hidden_size=128, num_attention_heads=4, vocab_size=49152,
                      max_position_embeddings=256),
        "data": {"streams": streams, "valid_holdout": HOLDOUT, "valid_holdout_seed": SEED},
        "training": dict(seq_length=64, train_tokens=1024)}, sort_keys=False))
    return path


def test_items_come_only_from_held_out_documents_and_rebuild_alike(zh_shard, tmp_path):
    prefix, texts = zh_shard
    path = recipe(tmp_path / "r.yaml", prefix)
    info = build_heldout_task(path, ["zh_a", "zh_b"], "zh", 40, tmp_path / "task")
    name = heldout_task_name("zh")
    rows = [json.loads(line) for line in (tmp_path / "task" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]
    doc_ids = shards.open(prefix).metadata(["doc_id"]).column("doc_id").to_numpy()
    held = held_out(doc_ids, HOLDOUT, SEED)
    assert 0 < held.sum() < len(texts) and info["held_out_documents"] == int(held.sum())
    assert info["items"] == len(rows) == 40 and info["per_stream"] == {
        "zh_a": int(held[0::2].sum()), "zh_b": int(held[1::2].sum())}
    trained = "".join(t for t, h in zip(texts, held) if not h)
    held_sentences = {s for t, h in zip(texts, held) if h for para in chinese_paragraphs(t) for s in para}
    for r in rows:
        source, index = r["source"].rsplit("#", 1)
        assert source == prefix and held[int(index)]
        assert r["context"] in texts[int(index)] and r["choices"][r["label"]] in texts[int(index)]
        # every sentence shown (context, answer, distractors) is held-out text no run trained on
        for sentence in (r["context"], *r["choices"]):
            assert sentence in held_sentences and sentence not in trained
    complete = json.loads((tmp_path / "task" / "COMPLETE").read_text())
    assert complete == info and complete["valid_holdout"] == HOLDOUT and complete["valid_holdout_seed"] == SEED
    config = yaml.safe_load((tmp_path / "task" / f"{name}.yaml").read_text())
    assert config["task"] == name and config["target_delimiter"] == ""
    build_heldout_task(path, ["zh_b", "zh_a"], "zh", 40, tmp_path / "again")  # stream order does not matter
    assert (tmp_path / "again" / f"{name}.jsonl").read_bytes() == (tmp_path / "task" / f"{name}.jsonl").read_bytes()


def test_bad_requests_are_refused_naming_what(zh_shard, tmp_path):
    path = recipe(tmp_path / "r.yaml", zh_shard[0])
    with pytest.raises(ValueError, match=r"r\.yaml: no stream 'zh_c' \(streams: zh_a, zh_b\)"):
        build_heldout_task(path, ["zh_a", "zh_c"], "zh", 10, tmp_path / "t")
    with pytest.raises(ValueError, match=rf"{heldout_task_name('zh')}: the source text gives \d+ sentence pairs, 100000 needed"):
        build_heldout_task(path, ["zh_a"], "zh", 100000, tmp_path / "t")
    with pytest.raises(ValueError, match=rf"{heldout_task_name('zh')}: 10 items asked; items come in choice sets of 4"):
        build_heldout_task(path, ["zh_a"], "zh", 10, tmp_path / "t")
    assert not (tmp_path / "t").exists()  # nothing half-built is left where lm-eval would read it


def test_lm_eval_runs_the_held_out_task_and_records_where_it_came_from(zh_shard, model_dir, tmp_path, capsys):
    path = recipe(tmp_path / "r.yaml", zh_shard[0])
    name = heldout_task_name("zh")
    out = tmp_path / "lm.json"
    args = ["eval", "lm-eval", model_dir, "--tasks", name, "--heldout-from", str(path), "--heldout-streams",
            "zh_a,zh_b", "--heldout-lang", "zh", "--heldout-items", "20", "--limit", "4", "--device", "cpu",
            "--out", str(out)]
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert result["tasks"][name]["samples"] == 4 and 0.0 <= result["tasks"][name]["acc"] <= 1.0
    assert result["heldout_task"]["items"] == 20 and result["heldout_task"]["recipe"] == str(path)
    assert not list(tmp_path.glob(".heldout-task-*"))  # the built task folder is removed after the run
    capsys.readouterr()
    # the task must be named in --tasks, and the held-out options go together: one line each, exit 2
    assert main([*args[:4], "cpt_next_sentence_zh", *args[5:]]) == 2
    assert f"--heldout-from builds {name}: name it in --tasks" in capsys.readouterr().err
    assert main(["eval", "lm-eval", model_dir, "--tasks", name, "--heldout-streams", "zh_a", "--out", str(out)]) == 2
    assert "--heldout-streams/--heldout-lang need --heldout-from RECIPE" in capsys.readouterr().err
