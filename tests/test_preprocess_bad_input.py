"""Every bad-input case of the issue: with --on-error skip the exact counts by reason and the skip
log; with --on-error fail (the default) the file:line and reason of the first bad record."""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import cpt.shards as shards
from cpt.assets import mistral_tokenizer_dir
from cpt.commands import preprocess as preprocess_cmd
from cpt.corpus.records import CorpusError
from cpt.shards.pipeline import PreprocessConfig, run_preprocess

SP_MODEL = mistral_tokenizer_dir() / "tokenizer.model.v1"
GOOD = '{"text": "a good document"}\n'

# name -> (file name, bytes, expected reason, expected line of the bad record)
CASES = {
    "malformed_json": ("bad.jsonl", GOOD + '{"text": "unterminated\n' + GOOD, "bad_json", 2),
    "not_an_object": ("arr.jsonl", GOOD + '["text"]\n', "bad_json", 2),
    "invalid_utf8": ("utf.jsonl", GOOD.encode() + b'{"text": "caf\xe9"}\n', "invalid_utf8", 2),
    "lone_surrogate": ("sur.jsonl", GOOD + '{"text": "x\\ud800y"}\n', "invalid_utf8", 2),
    "missing_text": ("miss.jsonl", GOOD + GOOD + '{"body": "no text key"}\n', "missing_text", 3),
    "null_text": ("null.jsonl", '{"text": null}\n', "missing_text", 1),
    "empty_text": ("empty_text.jsonl", GOOD + '{"text": "   "}\n', "empty_text", 2),
    "non_string_text": ("num.jsonl", '{"text": 42}\n' + GOOD, "non_string_text", 1),
    "empty_file": ("empty.jsonl", b"", "empty_file", 0),
    "empty_txt_file": ("empty.txt", b"", "empty_file", 0),
    "unsupported_format": ("notes.csv", "a,b\n1,2\n", "unsupported_format", 0),
    "invalid_utf8_txt": ("latin1.txt", b"caf\xe9 au lait", "invalid_utf8", 0),
}


def _write(path: Path, data) -> None:
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def _cfg(inputs, out, **kw) -> PreprocessConfig:
    return PreprocessConfig(inputs=[str(p) for p in inputs], output_prefix=str(out), tokenizer=str(SP_MODEL),
                            progress=False, chunk_mb=0.001, **kw)


@pytest.mark.parametrize("case", sorted(CASES))
def test_fail_mode_names_file_line_and_reason(tmp_path, case):
    name, data, reason, line = CASES[case]
    _write(tmp_path / name, data)
    with pytest.raises(CorpusError) as err:
        run_preprocess(_cfg([tmp_path / name], tmp_path / "out"))
    assert str(err.value).startswith(f"{name}:{line}: {reason}: ")
    assert not Path(f"{tmp_path / 'out'}.manifest.json").exists()


def test_fail_mode_from_the_command_line(tmp_path, capsys):
    _write(tmp_path / "bad.jsonl", CASES["malformed_json"][1])
    code = preprocess_cmd.main(["--input", str(tmp_path / "bad.jsonl"), "--output-prefix", str(tmp_path / "o"),
                                "--tokenizer-model", str(SP_MODEL), "--no-progress"])
    assert code == 1
    assert "cpt preprocess: error: bad.jsonl:2: bad_json: " in capsys.readouterr().err


def _mixed_bad_corpus(root: Path) -> dict[str, int]:
    """All the cases in one folder of mixed formats, plus good documents; returns expected counts."""
    root.mkdir()
    for case, (name, data, _, _) in CASES.items():
        _write(root / name, data)
    # a 50 MB document between two good ones (skipped without being parsed or held whole)
    with open(root / "big.jsonl", "w") as f:
        f.write(GOOD)
        f.write('{"text": "' + "x" * (50 << 20) + '"}\n')
        f.write(GOOD)
    # unreadable: a dangling link, and a gzip file cut in the middle of its stream
    os.symlink(root / "does-not-exist.jsonl", root / "gone.jsonl")
    blob = gzip.compress(("".join(json.dumps({"text": f"doc {i} " * 50}) + "\n" for i in range(200))).encode())
    _write(root / "cut.jsonl.gz", blob[: len(blob) // 2])
    pq.write_table(pa.table({"text": ["row one", None, "row three"]}), root / "rows.parquet")
    pq.write_table(pa.table({"text": pa.array([1, 2], pa.int64())}), root / "ints.parquet")
    _write(root / ".DS_Store", b"\x00\x01")
    _write(root / "blank_lines.jsonl", GOOD + "\n\n" + GOOD)
    return {
        "bad_json": 2, "invalid_utf8": 3, "missing_text": 3, "empty_text": 1, "non_string_text": 3,
        "empty_file": 2, "unsupported_format": 1, "too_large": 1, "unreadable": 2,
    }


def test_skip_mode_counts_every_reason_and_logs_every_location(tmp_path):
    expected = _mixed_bad_corpus(tmp_path / "in")
    summary = run_preprocess(_cfg([tmp_path / "in"], tmp_path / "out", on_error="skip"))
    assert summary["skipped_by_reason"] == dict(sorted(expected.items()))
    assert summary["skipped"] == sum(expected.values())
    assert summary["read"] == summary["written"] + summary["skipped"]
    assert summary["blank_lines"] == 2
    assert summary["ignored_files"] == [str(tmp_path / "in" / ".DS_Store")]
    shard = shards.open(tmp_path / "out")
    assert len(shard) == summary["written"]
    cut = [r for r in shard.metadata().to_pylist() if r["source"] == "in/cut.jsonl.gz"]
    assert 0 < len(cut) < 200  # the readable part of the cut file is kept
    # good documents: 1 per GOOD line in the cases, 2 around the big one, 2 with blank lines, 2 parquet rows
    good_lines = sum(str(CASES[c][1]).count('"a good document"') for c in CASES)
    assert summary["written"] == good_lines + 2 + 2 + 2 + len(cut)
    log = [json.loads(line) for line in Path(f"{tmp_path / 'out'}.skipped.jsonl").read_text().splitlines()]
    assert len(log) == summary["skipped"]
    where = {(e["source"], e["line"], e["reason"]) for e in log}
    assert ("in/big.jsonl", 2, "too_large") in where
    assert ("in/gone.jsonl", 0, "unreadable") in where
    assert ("in/bad.jsonl", 2, "bad_json") in where
    assert ("in/rows.parquet", 1, "missing_text") in where
    assert ("in/ints.parquet", 0, "non_string_text") in where and ("in/ints.parquet", 1, "non_string_text") in where
    assert ("in/notes.csv", 0, "unsupported_format") in where
    assert shard.manifest["stats"]["skipped_by_reason"] == summary["skipped_by_reason"]


def test_skip_mode_counts_survive_shard_and_merge(tmp_path):
    expected = _mixed_bad_corpus(tmp_path / "in")
    parts = []
    for i in range(2):
        run_preprocess(_cfg([tmp_path / "in"], tmp_path / f"p{i}", on_error="skip", shard_index=i, num_shards=2))
        parts.append(tmp_path / f"p{i}")
    manifest = shards.merge(parts, tmp_path / "merged")
    assert manifest["stats"]["skipped_by_reason"] == dict(sorted(expected.items()))
    lines = Path(f"{tmp_path / 'merged'}.skipped.jsonl").read_text().splitlines()
    assert len(lines) == sum(expected.values())


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="on_error must be"):
        _cfg([tmp_path], tmp_path / "o", on_error="ignore")
    with pytest.raises(ValueError, match="shard_index must be in"):
        _cfg([tmp_path], tmp_path / "o", shard_index=2, num_shards=2)
    with pytest.raises(ValueError, match="clash with base metadata"):
        _cfg([tmp_path], tmp_path / "o", keep_fields=["source"])
    with pytest.raises(FileNotFoundError, match="no such file"):
        run_preprocess(_cfg([tmp_path / "missing"], tmp_path / "o"))
