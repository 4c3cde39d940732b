"""`cpt eval qa-nll`: answer NLL given the question, on a recipe stream's held-out QA pairs.

Checked against the model's own log-probabilities computed here by hand (a tiny random Llama with
SmolLM2's tokenizer), and end to end: QA jsonl -> `cpt preprocess --keep-fields question,answer` ->
a recipe stream with a held-out share -> the CLI scores exactly the held-out pairs."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from cpt.eval.qa_nll import PREFIX, QAPair, answer_nll, pair_window

PAIRS = [QAPair("What is the boiling point of water at sea level?", "It is 100 degrees Celsius."),
         QAPair("Which gas do plants take in for photosynthesis?", "Carbon dioxide, from the air."),
         QAPair("What force keeps the Moon in orbit?", "Gravity between the Earth and the Moon.")]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from cpt.assets import smollm2_hf_dir
    from cpt.demo.tiny_model import build_tiny_llama

    out = tmp_path_factory.mktemp("qa") / "tiny_hf"
    build_tiny_llama(out, smollm2_hf_dir(), seed=3)
    return out


def _encoder(model_dir: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    return lambda text: tok(text, add_special_tokens=False)["input_ids"]


def _by_hand(model_dir: Path, pairs) -> tuple[float, float, int]:
    """Sum of -log p(answer token | everything before), straight from the model's logits."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    encode = _encoder(model_dir)
    total, tokens, per_pair = 0.0, 0, []
    for p in pairs:
        context, target = encode(PREFIX.format(question=p.question)), encode(" " + p.answer)
        ids = torch.tensor([context + target])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
        nll = -sum(float(logp[len(context) + k - 1, t]) for k, t in enumerate(target))
        total, tokens = total + nll, tokens + len(target)
        per_pair.append(nll / len(target))
    return total / tokens, float(np.mean(per_pair)), tokens


def test_answer_nll_equals_the_models_own_log_probabilities(tiny_model):
    from cpt.annotate.perplexity import HFScorer

    scorer = HFScorer(str(tiny_model), "cpu", None, 256)
    got = answer_nll(PAIRS, scorer, _encoder(tiny_model))
    want_nll, want_pair, want_tokens = _by_hand(tiny_model, PAIRS)
    assert got["pairs"] == 3 and got["answer_tokens"] == want_tokens and got["truncated"] == 0
    assert got["answer_nll"] == pytest.approx(want_nll, rel=1e-5)
    assert got["pair_nll"] == pytest.approx(want_pair, rel=1e-5)
    assert 0 < got["answer_nll"] < math.log(49152) + 3  # a random model: about uniform over the vocabulary


def test_pair_window_keeps_the_answer_and_cuts_the_question_from_the_left(tiny_model):
    encode = _encoder(tiny_model)
    window, truncated = pair_window(PAIRS[0], encode, 12)
    target = encode(" " + PAIRS[0].answer)
    assert truncated and len(window.tokens) == 12 and window.tokens[window.first_target:].tolist() == target
    with pytest.raises(ValueError, match="empty answer"):
        pair_window(QAPair("q?", ""), encode, 64)


def test_cli_scores_the_held_out_pairs_of_a_stream(tiny_model, tmp_path):
    from cpt.cli import main
    from cpt.config import load_recipe
    from cpt.eval.qa_nll import heldout_pairs

    rows = [{"text": f"Question: {q}\nAnswer: {a}", "question": q, "answer": a, "lang": "synthetic",
             "kind": "science" if i % 3 else "code"}
            for i, (q, a) in enumerate((f"Question number {i} about {t}?", f"Answer {i}: {t} explained.")
                                       for i, t in enumerate(["heat", "light", "cells", "atoms", "rocks", "waves"] * 4))]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["preprocess", "--input", str(tmp_path / "qa.jsonl"), "--output-prefix", str(tmp_path / "qa"),
                 "--tokenizer-model", str(tiny_model), "--keep-fields", "kind,question,answer", "--no-progress"]) == 0
    recipe = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes/proxy/bilingual.yaml").read_text())
    # the stream's own share (0.5) applies, not the recipe-level one (0.05), and the output says so
    recipe["data"] = {"streams": [{"name": "qa", "prefixes": [str(tmp_path / "qa")], "weight": 1.0,
                                   "valid_holdout": 0.5}], "valid_holdout": 0.05, "valid_holdout_seed": 2}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    spec = load_recipe(tmp_path / "r.yaml").data.streams[0]
    held = heldout_pairs(spec, 0.05, 2, 'kind == "science"')
    assert 0 < len(held) < 16 and all(int(p.question.split()[2]) % 3 for p in held)
    out = tmp_path / "qa_nll.json"
    assert main(["eval", "qa-nll", "--model", str(tiny_model), "--recipe", str(tmp_path / "r.yaml"), "--stream", "qa",
                 "--where", 'kind == "science"', "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    want, _, tokens = _by_hand(tiny_model, held)
    assert result["metrics"]["pairs"] == len(held) and result["metrics"]["answer_tokens"] == tokens
    assert result["metrics"]["answer_nll"] == pytest.approx(want, rel=1e-5)
    assert result["valid_holdout"] == 0.5 and result["valid_holdout_seed"] == 2
    assert main(["eval", "qa-nll", "--model", str(tiny_model), "--recipe", str(tmp_path / "r.yaml"), "--stream",
                 "nope", "--out", str(out)]) != 0
