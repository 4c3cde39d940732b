"""`cpt preprocess` end to end on tiny corpora: formats, metadata, byte identity across workers,
shard-and-merge, kill-and-resume, read-back of source text, metadata updates."""
from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

import cpt.shards as shards
from cpt.assets import mistral_tokenizer_dir
from cpt.commands.merge import input_prefixes
from cpt.shards.merge import merge_shards
from cpt.shards.metadata import doc_id
from cpt.shards.pipeline import PreprocessConfig, run_preprocess
from cpt.tokenizers import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
SP_MODEL = mistral_tokenizer_dir() / "tokenizer.model.v1"  # SentencePiece: loads in milliseconds
SUFFIXES = (".bin", ".idx", ".meta.parquet", ".manifest.json", ".skipped.jsonl")

EN = "The committee met on {i} March and agreed to publish the report after review."
ZH = "中共中央总书记发表新年讲话，迈向充满希望的新世纪，第{i}段。"
CODE = "def f{i}(x):\n    if (x > {i}) {{\n        return x;\n    }}\n    return [x, {i}];\n"


def _lines(n: int, start: int = 0) -> list[dict]:
    out = []
    for i in range(start, start + n):
        kind = i % 3
        text = (EN if kind == 0 else ZH if kind == 1 else CODE).format(i=i) * (1 + i % 4)
        rec = {"text": text, "url": f"https://example.org/{i}", "score": i / 10}
        if i % 5 == 0:
            rec["lang"] = "zh-CN" if kind == 1 else "English" if kind == 0 else "python"
        out.append(rec)
    return out


def _jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines).encode()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A mixed folder: jsonl, jsonl.gz, jsonl.zst, parquet (2 row groups), txt files."""
    root = tmp_path_factory.mktemp("corpus") / "mixed"
    (root / "sub" / "txt").mkdir(parents=True)
    (root / "a.jsonl").write_bytes(_jsonl(_lines(40)))
    (root / "sub" / "b.jsonl.gz").write_bytes(gzip.compress(_jsonl(_lines(12, 100))))
    (root / "sub" / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(_jsonl(_lines(9, 200))))
    table = pa.Table.from_pylist(_lines(30, 300))
    pq.write_table(table, root / "d.parquet", row_group_size=10)
    for i in range(3):
        (root / "sub" / "txt" / f"t{i}.txt").write_text(CODE.format(i=i) if i == 2 else EN.format(i=i) * 2)
    return root


def run(corpus_paths, out: Path, **kw) -> dict:
    cfg = dict(inputs=[str(p) for p in corpus_paths], output_prefix=str(out), tokenizer=str(SP_MODEL),
               chunk_mb=0.002, progress=False, keep_fields=["url", "score"])
    cfg.update(kw)
    return run_preprocess(PreprocessConfig(**cfg))


def files_of(prefix: Path) -> dict[str, bytes]:
    return {s: Path(f"{prefix}{s}").read_bytes() for s in SUFFIXES}


@pytest.fixture(scope="module")
def single(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "out"
    summary = run([corpus], out, workers=1)
    assert summary["chunks"] > 5  # the tiny chunk size really splits the work
    return out


def test_all_formats_read_with_metadata(corpus, single):
    shard = shards.open(single, expect_tokenizer=load_tokenizer(SP_MODEL))
    meta = shard.metadata().to_pylist()
    assert len(shard) == 40 + 12 + 9 + 30 + 3
    by_source: dict[str, list[dict]] = {}
    for row in meta:
        by_source.setdefault(row["source"], []).append(row)
    assert list(by_source) == ["mixed/a.jsonl", "mixed/d.parquet", "mixed/sub/b.jsonl.gz",
                               "mixed/sub/c.jsonl.zst", "mixed/sub/txt/t0.txt", "mixed/sub/txt/t1.txt",
                               "mixed/sub/txt/t2.txt"]
    assert [r["line"] for r in by_source["mixed/a.jsonl"]] == list(range(1, 41))
    assert [r["line"] for r in by_source["mixed/d.parquet"]] == list(range(30))
    raw = (corpus / "a.jsonl").read_bytes()
    offsets = [r["offset"] for r in by_source["mixed/a.jsonl"]]
    assert offsets[0] == 0 and all(raw[o - 1: o] == b"\n" for o in offsets[1:])
    assert all(r["offset"] == -1 for r in by_source["mixed/sub/b.jsonl.gz"])
    for row in meta:
        assert row["doc_id"] == doc_id(row["source"], row["line"])
    assert len({r["doc_id"] for r in meta}) == len(meta)
    np.testing.assert_array_equal(np.array([r["n_tokens"] for r in meta]), shard.doc_lengths)
    first = by_source["mixed/a.jsonl"]
    assert first[0]["url"] == "https://example.org/0" and first[1]["score"] == "0.1"
    assert by_source["mixed/sub/txt/t0.txt"][0]["url"] is None
    # lang: from the field when present (normalised), else detected
    assert [r["lang"] for r in first[:6]] == ["en", "zh", "code", "en", "zh", "code"]
    assert first[5]["lang"] == "code" and by_source["mixed/sub/txt/t2.txt"][0]["lang"] == "code"
    assert shard.manifest["stats"] == {"blank_lines": 0, "read": 94, "skipped": 0, "skipped_by_reason": {}, "written": 94}


def test_token_ids_are_the_tokenizers(corpus, single):
    tok = load_tokenizer(SP_MODEL)
    shard = shards.open(single)
    for i in range(len(shard)):
        text = shards.document_text(shard, i)
        assert shard[i].tolist() == tok.encode(text) + [tok.eod]


def test_source_text_read_back_for_every_format(corpus, single):
    shard = shards.open(single)
    meta = shard.metadata().to_pylist()
    expected = {("mixed/a.jsonl", r["line"]): None for r in meta}
    texts = {("mixed/a.jsonl", i + 1): r["text"] for i, r in enumerate(_lines(40))}
    texts.update({("mixed/sub/b.jsonl.gz", i + 1): r["text"] for i, r in enumerate(_lines(12, 100))})
    texts.update({("mixed/sub/c.jsonl.zst", i + 1): r["text"] for i, r in enumerate(_lines(9, 200))})
    texts.update({("mixed/d.parquet", i): r["text"] for i, r in enumerate(_lines(30, 300))})
    texts.update({(f"mixed/sub/txt/t{i}.txt", 0): (corpus / "sub" / "txt" / f"t{i}.txt").read_text() for i in range(3)})
    assert len(expected) <= len(texts)
    expected_texts = [texts[(row["source"], row["line"])] for row in meta]
    assert [shards.document_text(shard, i) for i in range(len(meta))] == expected_texts
    assert list(shards.document_texts(shard)) == expected_texts
    assert list(shards.document_texts(shard, 45, 60)) == expected_texts[45:60]


def test_workers_give_identical_bytes(corpus, single, tmp_path):
    run([corpus], tmp_path / "w2", workers=2)
    assert files_of(tmp_path / "w2") == files_of(single)


def test_shard_and_merge_equals_one_run(corpus, single, tmp_path):
    parts = []
    for i in range(3):
        summary = run([corpus], tmp_path / f"part{i}", shard_index=i, num_shards=3)
        assert summary["chunks"] > 0
        parts.append(tmp_path / f"part{i}")
    manifests = [shards.open(p).manifest for p in parts]
    assert [m["part"] for m in manifests] == [{"shard_index": i, "num_shards": 3} for i in range(3)]
    merge_shards(input_prefixes([str(p) for p in parts]), tmp_path / "merged")
    assert files_of(tmp_path / "merged") == files_of(single)


def test_merge_refuses_different_tokenizers(corpus, single, tmp_path):
    other_model = mistral_tokenizer_dir() / "mistral_instruct_tokenizer_240323.model.v3"  # also uint16
    run([corpus / "sub" / "txt"], tmp_path / "other", tokenizer=str(other_model))
    with pytest.raises(shards.ShardError, match="different tokenizers"):
        merge_shards([single, tmp_path / "other"], tmp_path / "bad")


def _cli(*args: str, env_extra: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "cpt.commands.preprocess", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def test_kill_and_resume_is_byte_identical(corpus, single, tmp_path):
    out = tmp_path / "killed"
    args = ["--input", str(corpus), "--output-prefix", str(out), "--tokenizer", str(SP_MODEL), "--workers", "2",
            "--chunk-mb", "0.002", "--keep-fields", "url,score", "--no-progress"]
    proc = _cli(*args, env_extra={"CPT_PREPROCESS_BATCH_DELAY": "0.4"})
    work = Path(f"{out}.cpt-work")
    deadline = time.time() + 120
    while time.time() < deadline and len([p for p in work.glob("chunk-*") if ".tmp-" not in p.name]) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its workers, mid-chunk
    proc.wait()
    assert not Path(f"{out}.manifest.json").exists()
    done = [p for p in work.glob("chunk-*") if ".tmp-" not in p.name]
    assert len(done) >= 3
    proc = _cli(*args)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert "already done (resuming)" in err.decode()
    assert files_of(out) == files_of(single)
    summary = json.loads(Path(f"{out}.summary.json").read_text())
    assert summary["chunks_resumed"] >= 3
    assert not work.exists()


def test_changed_input_is_not_resumed(corpus, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(_jsonl(_lines(10)))
    work = Path(f"{tmp_path / 'o'}.cpt-work")
    work.mkdir()
    (work / "plan.json").write_text('{"stale": true}')
    (work / "chunk-000000").mkdir()  # a chunk of another plan must not be reused
    summary = run([src], tmp_path / "o")
    assert summary["chunks_resumed"] == 0 and summary["written"] == 10


def test_multiple_keys_and_megatron_names(tmp_path):
    src = tmp_path / "qa.jsonl"
    src.write_text("".join(json.dumps({"question": f"What is {i}?", "answer": f"It is {i}."}) + "\n" for i in range(7)))
    summary = run([src], tmp_path / "qa", json_keys=["question", "answer"], keep_fields=[], append_eod=False)
    assert summary["outputs"] == {"question": f"{tmp_path}/qa_question_document", "answer": f"{tmp_path}/qa_answer_document"}
    tok = load_tokenizer(SP_MODEL)
    q, a = shards.open(f"{tmp_path}/qa_question_document"), shards.open(f"{tmp_path}/qa_answer_document")
    assert len(q) == len(a) == 7
    assert q[3].tolist() == tok.encode("What is 3?") and a[3].tolist() == tok.encode("It is 3.")
    assert q.manifest["options"]["json_key"] == "question" and not q.manifest["options"]["append_eod"]


def test_update_metadata_adds_annotation_columns(single, tmp_path):
    import shutil

    for s in SUFFIXES:
        shutil.copy(f"{single}{s}", f"{tmp_path / 'ann'}{s}")
    prefix = tmp_path / "ann"
    n = len(shards.open(prefix))
    topics = [["math", "code", "news"][i % 3] for i in range(n)]
    shards.update_metadata(prefix, {"topic": topics, "topic_conf": np.linspace(0, 1, n).astype(np.float32)})
    shards.update_metadata(prefix, {"ppl": np.arange(n, dtype=np.float32)})
    shard = shards.open(prefix, verify_checksums=True)
    table = shard.metadata(["topic", "topic_conf", "ppl"])
    assert table["topic"].to_pylist() == topics and table["ppl"].to_pylist()[:3] == [0.0, 1.0, 2.0]
    assert shard.manifest["meta_columns"][-3:] == ["topic", "topic_conf", "ppl"]
    shards.update_metadata(prefix, {"topic": ["x"] * n})  # replace in place
    assert set(shards.open(prefix).metadata(["topic"])["topic"].to_pylist()) == {"x"}
    with pytest.raises(ValueError, match="has 3 values, the shard has"):
        shards.update_metadata(prefix, {"ppl": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="base column"):
        shards.update_metadata(prefix, {"n_tokens": np.zeros(n)})
    assert not list(tmp_path.glob("*.tmp"))


def test_more_shards_than_chunks_gives_empty_valid_parts(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(_jsonl(_lines(6)))
    one = run([src], tmp_path / "one")
    assert one["chunks"] == 1
    parts = []
    for i in range(4):
        run([src], tmp_path / f"p{i}", shard_index=i, num_shards=4)
        parts.append(tmp_path / f"p{i}")
    sizes = [len(shards.open(p)) for p in parts]
    assert sorted(sizes) == [0, 0, 0, 6]
    merge_shards(parts, tmp_path / "merged")
    assert files_of(tmp_path / "merged") == files_of(tmp_path / "one")


def test_output_inside_the_input_folder_is_not_read_back(tmp_path):
    (tmp_path / "in.jsonl").write_bytes(_jsonl(_lines(5)))
    first = run([tmp_path], tmp_path / "out")
    again = run([tmp_path], tmp_path / "out")
    assert first["written"] == again["written"] == 5
    assert any(p.endswith("out.meta.parquet") for p in again["ignored_files"])


def test_concurrent_metadata_updates_keep_both_columns(single, tmp_path):
    """A tagger and a scorer updating one shard at once: the lock keeps both columns."""
    import shutil
    from concurrent.futures import ProcessPoolExecutor

    for s in SUFFIXES:
        shutil.copy(f"{single}{s}", f"{tmp_path / 'c'}{s}")
    prefix = str(tmp_path / "c")
    n = len(shards.open(prefix))
    with ProcessPoolExecutor(2) as pool:
        jobs = [pool.submit(shards.update_metadata, prefix, {name: np.full(n, k, np.float32)})
                for k, name in enumerate(["ppl", "topic_conf", "ppl_2", "score_2"])]
        [j.result() for j in jobs]
    names = shards.open(prefix, verify_checksums=True).metadata().column_names
    assert {"ppl", "topic_conf", "ppl_2", "score_2"} <= set(names)
