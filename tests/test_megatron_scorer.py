"""`cpt score --model <megatron checkpoint>`: the real SmolLM2-135M imported with `cpt convert
hf-to-mcore` scores documents (short ones, windowed long ones, one too short) with the same per-document
ppl as the HF scorer on the same folder, within 1e-4 relative in fp32; a `checkpoints` folder means its
latest step; the tokenizer comes from the import."""
from __future__ import annotations

import shutil

import pyarrow.parquet as pq
import pytest

from annotate_fixtures import mixed_corpus
from cpt import assets
from cpt.annotate.docs import write_jsonl
from cpt.annotate.perplexity import PerplexityAnnotatorFactory
from cpt.cli import main

pytestmark = pytest.mark.slow
SCORE = ["--device", "cpu", "--dtype", "float32", "--max-length", "48", "--stride", "16", "--max-doc-tokens", "120",
         "--chunk-size", "4", "--no-progress"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("megatron_scorer")
    docs = [{"id": f"d{i}", "text": d["text"][:400]} for i, d in enumerate(mixed_corpus(n_zh=2, n_en=3))]
    docs += [{"id": "short", "text": "Hello"}, {"id": "tiny", "text": "The cat sat on the mat."}]
    write_jsonl(folder / "corpus.jsonl", docs)
    return folder


def test_megatron_checkpoint_scores_like_the_hf_model(corpus, capsys):
    import torch

    torch.set_num_threads(1)  # small batches on a shared machine: one thread is the fastest
    hf_dir = assets.smollm2_hf_dir()
    ckpt = corpus / "import"
    assert main(["convert", "hf-to-mcore", str(hf_dir), str(ckpt), "--dtype", "fp32"]) == 0
    # a run's checkpoints folder: cpt score takes its latest complete step
    steps = corpus / "run" / "checkpoints"
    steps.mkdir(parents=True)
    (steps / "step_00000001").symlink_to(ckpt)
    shutil.copytree(ckpt, steps / "step_00000002.partial", ignore=shutil.ignore_patterns("*.distcp", "COMPLETE"))

    from megatron_ext.scoring import is_checkpoint, tokenizer_dir

    assert is_checkpoint(steps) and not is_checkpoint(hf_dir)
    assert tokenizer_dir(steps) == steps / "step_00000001" / "hf"

    out = corpus / "megatron.parquet"
    assert main(["score", "--model", str(steps), *SCORE, str(corpus / "corpus.jsonl"), "--id-key", "id",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    got = {r["doc_id"]: r for r in pq.read_table(out).to_pylist()}
    summary = (corpus / "megatron.parquet.summary.json").read_text()
    assert '"backend": "megatron_ext.scoring:MegatronScorer"' in summary

    hf = PerplexityAnnotatorFactory(str(hf_dir), device="cpu", dtype="float32", max_length=48, stride=16,
                                    max_doc_tokens=120)()
    from cpt.annotate.docs import read_jsonl

    want = {r.doc_id: r for r in hf(list(read_jsonl(corpus / "corpus.jsonl", id_key="id")))}
    assert got.keys() == want.keys()
    assert got["short"]["skip"] == want["short"].skip == "too_few_tokens"
    compared = 0
    for doc_id, w in want.items():
        if w.skip:
            continue
        assert got[doc_id]["ppl"] == pytest.approx(w.values["ppl"], rel=1e-4), doc_id
        compared += 1
    assert compared == 6
    windowed = hf.encode([d.text for d in read_jsonl(corpus / "corpus.jsonl")])
    assert max(min(len(ids), 120) for ids in windowed) > 48  # some documents were windowed


def test_megatron_backend_names_a_missing_tokenizer(tmp_path, capsys):
    bare = tmp_path / "ckpt"
    bare.mkdir()
    (bare / "trainer_state.json").write_text('{"model": {}}')
    (bare / "COMPLETE").write_text("1\n")
    write_jsonl(tmp_path / "c.jsonl", [{"text": "hello world"}])
    argv = ["score", "--model", str(bare), *SCORE, str(tmp_path / "c.jsonl"), "--out", str(tmp_path / "o.jsonl")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no tokenizer found" in err and "pass --tokenizer" in err
