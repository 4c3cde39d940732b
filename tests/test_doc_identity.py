"""One document identity (cpt.corpus.identity) for preprocess, tag/score and synth."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cpt.corpus.identity import doc_id, doc_id_text, parse_doc_id, source_of


def _write(path: Path, texts: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t, "id": f"x{i}"}) + "\n" for i, t in enumerate(texts)))


def test_two_folders_with_one_file_name_never_collide(tmp_path):
    from cpt.annotate.docs import read_corpora

    _write(tmp_path / "a" / "web.jsonl", ["alpha one", "alpha two"])
    _write(tmp_path / "b" / "web.jsonl", ["beta one", "beta two"])
    docs = list(read_corpora([tmp_path / "a", tmp_path / "b"], root=tmp_path))
    assert len({d.doc_id for d in docs}) == 4
    assert docs[0].doc_id == doc_id_text("a/web.jsonl", 1) and docs[3].doc_id == doc_id_text("b/web.jsonl", 2)
    with pytest.raises(ValueError, match="not inside the corpus root"):
        source_of(tmp_path / "a" / "web.jsonl", tmp_path / "b")


def test_annotate_synth_and_preprocess_give_a_document_the_same_id(tmp_path):
    """The raw-corpus readers of tag/score and synth, and the shards of preprocess, agree."""
    from cpt import shards
    from cpt.assets import mistral_tokenizer_dir
    from cpt.annotate.docs import read_corpora
    from cpt.commands import preprocess
    from cpt.synth.sources import documents_from_jsonl

    _write(tmp_path / "corpus" / "en" / "web.jsonl", ["The first document.", "", "The third one."][::2] + ["Fourth."])
    (tmp_path / "corpus" / "en" / "notes.txt").write_text("not jsonl: left out of a folder by the jsonl readers")
    root = tmp_path / "corpus"
    from cpt.cli import build_parser

    args = build_parser().parse_args(["preprocess", "--input", str(root / "en" / "web.jsonl"), "--output-prefix",
                                      str(tmp_path / "out" / "web"), "--corpus-root", str(root), "--no-progress",
                                      "--tokenizer", str(mistral_tokenizer_dir() / "tokenizer.model.v1")])
    assert preprocess.run(args) == 0
    meta = shards.open(tmp_path / "out" / "web").metadata(["doc_id", "source", "line"]).to_pydict()
    assert meta["source"] == ["en/web.jsonl"] * 3
    tagged = [d.doc_id for d in read_corpora([root / "en"], root=root)]
    synth = [d.doc_id for d in documents_from_jsonl([root / "en"], root=root)]
    assert tagged == synth == [str(i) for i in meta["doc_id"]]
    assert meta["doc_id"] == [doc_id("en/web.jsonl", line) for line in meta["line"]]


def test_old_shard_ids_are_unchanged_and_ids_parse():
    # the hash preprocess wrote before the identity module existed: shards keep their ids
    import hashlib

    old = int.from_bytes(hashlib.blake2b(b"web/x.jsonl\x007", digest_size=8).digest(), "little")
    assert doc_id("web/x.jsonl", 7) == old
    assert parse_doc_id(str(old)) == old == parse_doc_id(hex(old))
    with pytest.raises(ValueError, match="doc id 'abc'"):
        parse_doc_id("abc")
    with pytest.raises(ValueError, match="64-bit range"):
        parse_doc_id(str(1 << 64))
