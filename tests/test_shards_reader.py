"""The reader refuses bad or incomplete shards with one clear message; the happy path is cheap."""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

import cpt.shards as shards
from cpt.assets import mistral_tokenizer_dir
from cpt.shards import ShardError
from cpt.shards.pipeline import PreprocessConfig, run_preprocess
from cpt.tokenizers import load_tokenizer

SP_MODEL = mistral_tokenizer_dir() / "tokenizer.model.v1"
OTHER_MODEL = mistral_tokenizer_dir() / "mistral_instruct_tokenizer_240323.model.v3"
SUFFIXES = (".bin", ".idx", ".meta.parquet", ".manifest.json", ".skipped.jsonl")


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("good")
    (root / "in.jsonl").write_text("".join(json.dumps({"text": f"document number {i} " * (i + 1)}) + "\n" for i in range(20)))
    run_preprocess(PreprocessConfig(inputs=[str(root / "in.jsonl")], output_prefix=str(root / "s"),
                                    tokenizer=str(SP_MODEL), progress=False))
    return root / "s"


def copy(good: Path, dst: Path) -> Path:
    for s in SUFFIXES:
        shutil.copy(f"{good}{s}", f"{dst}{s}")
    return dst


def test_good_shard_opens_with_cheap_views(good):
    shard = shards.open(good, expect_tokenizer=load_tokenizer(SP_MODEL), verify_checksums=True)
    assert len(shard) == 20 and shard.dtype == np.uint16
    assert isinstance(shard.index.sequence_lengths, np.memmap) and isinstance(shard.tokens, np.memmap)
    assert shard.n_tokens == int(shard.doc_lengths.sum()) == shard.manifest["n_tokens"]
    assert shard.metadata(["n_tokens"])["n_tokens"].to_pylist() == shard.doc_lengths.tolist()
    assert shards.open(f"{good}.bin").n_documents == 20  # any of the file names works as the prefix
    with pytest.raises(IndexError):
        shard[20]


def _patch(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


CORRUPTIONS = {
    "truncated bin": (lambda p: open(f"{p}.bin", "r+b").truncate(Path(f"{p}.bin").stat().st_size - 2),
                      r"\.idx/\.bin mismatch: the index describes \d+ bytes of tokens, s\.bin has \d+"),
    "bin too long": (lambda p: open(f"{p}.bin", "ab").write(b"\0\0"), r"\.idx/\.bin mismatch"),
    "wrong magic": (lambda p: _patch(f"{p}.idx", 0, b"XXIDIDX\x00\x00"), "has magic b'XXIDIDX"),
    "wrong version": (lambda p: _patch(f"{p}.idx", 9, struct.pack("<Q", 2)), "has version 2, expected 1"),
    "unknown dtype": (lambda p: _patch(f"{p}.idx", 17, bytes([42])), "unknown dtype code 42"),
    "idx truncated": (lambda p: open(f"{p}.idx", "r+b").truncate(Path(f"{p}.idx").stat().st_size - 8),
                      "but its header .* implies"),
    "idx shorter than header": (lambda p: open(f"{p}.idx", "r+b").truncate(10), "shorter than the header"),
    "bin missing": (lambda p: Path(f"{p}.bin").unlink(), r"s\.bin is missing"),
    "manifest missing (incomplete)": (lambda p: Path(f"{p}.manifest.json").unlink(),
                                      "manifest.json is missing, so the shard is incomplete"),
    "manifest counts": (lambda p: _edit_manifest(p, n_tokens=1), "manifest says n_tokens=1"),
    "manifest not complete": (lambda p: _edit_manifest(p, complete=False), "not a complete cpt-shard manifest"),
    "metadata missing": (lambda p: Path(f"{p}.meta.parquet").unlink(), r"s\.meta\.parquet is missing"),
    "dtype differs from manifest": (lambda p: _edit_manifest(p, dtype="int32"), "manifest says dtype int32"),
}


def _edit_manifest(prefix, **changes) -> None:
    path = Path(f"{prefix}.manifest.json")
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_shards_are_refused(good, tmp_path, case):
    corrupt, message = CORRUPTIONS[case]
    prefix = copy(good, tmp_path / "s")
    corrupt(prefix)
    with pytest.raises(ShardError, match=message) as err:
        shards.open(prefix)
    assert str(err.value).startswith(f"refusing shard {prefix}")


def test_idx_bin_from_different_runs_refused(good, tmp_path):
    prefix = copy(good, tmp_path / "s")
    tokens = np.fromfile(f"{prefix}.bin", dtype=np.uint16)
    tokens[:-1].tofile(f"{prefix}.bin")  # one token short, as if from another run
    with pytest.raises(ShardError, match="mismatch"):
        shards.open(prefix)


def test_same_size_corruption_caught_by_checksums(good, tmp_path):
    prefix = copy(good, tmp_path / "s")
    data = bytearray(Path(f"{prefix}.bin").read_bytes())
    data[10] ^= 0xFF
    Path(f"{prefix}.bin").write_bytes(bytes(data))
    shards.open(prefix)  # sizes and counts still agree
    with pytest.raises(ShardError, match=r"s\.bin does not match the manifest's sha256"):
        shards.open(prefix, verify_checksums=True)


def test_tokenizer_mismatch_refused(good):
    other = load_tokenizer(OTHER_MODEL)
    with pytest.raises(ShardError, match=r"tokenizer mismatch: made with tokenizer.model.v1 \(\w{12}\), expected"):
        shards.open(good, expect_tokenizer=other)
    with pytest.raises(ShardError, match="tokenizer mismatch"):
        shards.open(good, expect_tokenizer=other.identity())
    with pytest.raises(ShardError, match="tokenizer mismatch"):
        shards.open(good, expect_tokenizer=other.sha256)
    shards.open(good, expect_tokenizer=load_tokenizer(SP_MODEL).identity())


def test_update_metadata_refuses_a_bad_shard(good, tmp_path):
    prefix = copy(good, tmp_path / "s")
    Path(f"{prefix}.manifest.json").unlink()
    with pytest.raises(ShardError, match="incomplete"):
        shards.update_metadata(prefix, {"ppl": np.zeros(20)})
