"""`cpt data build-cache RECIPE`: builds every stream's cache entry once (train and valid splits),
finds them the second time, and a training data build over the cache reads the same samples as
the in-memory path."""
import json

import numpy as np

from cpt.cli import main
from train_fixtures import stream_recipe, write_lang_shards, write_recipe


def test_build_cache_then_training_data_reads_it(tmp_path, capsys):
    prefix = write_lang_shards(tmp_path / "lang")
    recipe = stream_recipe(prefix, tmp_path / "out", data={"valid_holdout": 0.2})
    recipe["data"]["streams"][1]["order"] = "shuffle"
    path = write_recipe(tmp_path / "r.yaml", recipe)
    assert main(["data", "build-cache", str(path)]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (first["streams_built"], first["streams_found"]) == (4, 0)  # en/zh x train/valid
    assert main(["data", "build-cache", str(path)]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (second["streams_built"], second["streams_found"]) == (0, 4)
    summary = json.loads((tmp_path / "out" / "data_cache" / "build-cache.summary.json").read_text())
    assert len(summary["streams"]) == 4 and len(list((tmp_path / "out" / "data_cache").glob("table-*"))) == 1

    from cpt.config import load_recipe
    from cpt.train.stream_data import build_streams

    r = load_recipe(str(path), [])
    d, seq = r.data, r.training.seq_length
    for split in ("train", "valid"):
        cached = build_streams(d.streams, seq, split, d.valid_holdout, cache_dir=str(tmp_path / "out" / "data_cache"))
        plain = build_streams(d.streams, seq, split, d.valid_holdout)
        assert all(s.cache_hit for s in cached)
        for a, b in zip(plain, cached):
            assert a.fingerprint == b.fingerprint
            idx = np.arange(3 * (a.tokens_per_epoch // seq))
            pa_, pb = a.pieces(idx), b.pieces(idx)
            for name in ("sample_offsets", "source", "document", "start", "stop"):
                np.testing.assert_array_equal(getattr(pa_, name), getattr(pb, name))


def test_build_cache_refuses_a_blend_recipe(tmp_path, capsys):
    from train_fixtures import tiny_recipe, write_byte_shards

    train, valid = write_byte_shards(tmp_path / "bytes")
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe(train, valid, tmp_path / "out"))
    assert main(["data", "build-cache", str(path)]) == 2
    assert "no data.streams" in capsys.readouterr().err


def test_recipe_ppl_bands_reach_the_training_stream_and_never_the_validation_stream(tmp_path):
    """A banded curriculum trains band after band; its held-out side is read in a shuffle as every
    validation stream is (a ppl order, banded or not, would evaluate the easiest documents only)."""
    from cpt import shards
    from cpt.config import StreamSpec
    from cpt.train.stream_data import build_streams

    prefix = write_lang_shards(tmp_path / "lang")
    n = len(shards.read_metadata(prefix))
    ppl = np.random.default_rng(0).gamma(2.0, 10.0, n)
    shards.update_metadata(prefix, {"ppl": ppl})
    spec = StreamSpec(name="zh", prefixes=[prefix], weight=1.0, filter='lang == "zh"', order="ppl_asc",
                      ppl_bands=3, seed=4)
    train, = build_streams([spec], 64, "train", 0.2)
    valid, = build_streams([spec], 64, "valid", 0.2)
    assert (train.config.order, train.config.ppl_bands) == ("ppl_asc", 3)
    assert (valid.config.order, valid.config.ppl_bands) == ("shuffle", 1)
    rows = train.epoch_rows(0)
    bands = np.array_split(rows, 3)
    assert all(ppl[lo].max() <= ppl[hi].min() for lo, hi in zip(bands, bands[1:]))
    assert not np.all(np.diff(ppl[rows]) >= 0)
