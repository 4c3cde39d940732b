"""`cpt sweep prepare DIR --size tiny|gpu`: the folder the proxy sweeps run in (their `workdir`).

Every step is a `cpt` command run in DIR by the demo's step runner (cpt.demo.runner: a finished
step is skipped on a rerun, a killed one resumes by the tool's own rules), so the folder is what a
user would build by hand:

    recipe_overrides.yaml
                      what the folder's sweeps train this size's model with (the sweeps'
                      `overrides_from`): nothing at tiny (the proxy recipes are set for it), SmolLM2's
                      learning rates at gpu; written once, a user's edit is kept
    corpus            the sweep corpus (cpt.demo.corpus size `proxy`): People's Daily in full, every
                      piece of gensim's Wikipedia articles, the Python reference, every LeetCode problem,
                      200 newsgroup posts (the English probe no arm trains on)
    base-model        tiny: the proxy (cpt.sweep.proxy_model: its own BPE, pre-trained once on the English
                      side, cached); gpu: SmolLM2-135M itself (the demo's model)
    preprocess-*      shards with the base model's tokenizer -> data/zh, data/en_code, data/en_general
    tag-train, tag    the demo's topic tagger (USE multilingual + a head trained on the labelled check sets)
    score             the base model's perplexity of the Chinese documents (the LH / HL curricula)
    convert           cpt convert hf-to-mcore: the base model -> models/base_mcore (its model.yaml is what
                      the sweeps' `model_from` reads); the sweeps without synthetic data can run from here
    synth-science, synth-code     QA by SmolLM2-135M-Instruct (the demo's generator), generated ONCE here
    synth-corrupt-*   the same generations with 30% / 50% of the trained answers made wrong (`--corrupt-rate`;
                      the journal is copied, so nothing is generated again); the pairs the synthetic stream
                      holds out stay clean and lend no answer (`--valid-holdout`), so no arm sees a held-out
                      answer
    preprocess-synthetic*         -> data/synthetic, data/synthetic_c30, data/synthetic_c50 (question and
                      answer kept in the metadata: `cpt eval qa-nll` scores the held-out pairs). Each
                      is preprocessed with its own folder as --corpus-root, so a pair has the same doc_id
                      clean or corrupted: every arm holds out the same pairs, and none trains on the
                      questions the QA metric asks

Synthetic QA is the expensive part on a CPU: SmolLM2-135M keeps few pairs per snippet, so the budget
(snippets, problems) is fixed here and the counts land in synth/*.summary.json -- the sweeps say how
much QA they had. The science snippets are capped per discipline (`--max-per-discipline`), so the
QA covers every discipline the corpus holds rather than the first articles' subject.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cpt.demo.pipeline import DemoSettings, _annotate_steps, corpus_action
from cpt.demo.runner import Step

RECIPE_OVERRIDES = "recipe_overrides.yaml"
"""The folder's recipe overrides (written once; edit it to change what the folder's sweeps train with)."""
BASE_HF = "models/base_hf"
BASE_MCORE = "models/base_mcore"
CORPUS_SIZE = "proxy"
CORRUPT_RATES = (0.3, 0.5)
SYNTH_VALID_HOLDOUT = 0.5
SYNTH_VALID_HOLDOUT_SEED = 2
"""The validation split recipes/proxy/synthetic.yaml applies to the synthetic stream (its valid_holdout and
data.valid_holdout_seed): error injection leaves these held-out pairs clean and never lends their answers."""
SYNTH_FIELDS = "discipline,kind,question,answer"
"""Synthetic metadata kept in the shards: `cpt eval qa-nll` reads question and answer of held-out pairs."""


@dataclass(frozen=True, slots=True)
class PrepareSettings:
    """What differs between the proxy sizes."""

    size: str
    """tiny (the CPU proxy) or gpu (SmolLM2-135M)"""
    annotate: DemoSettings
    """tagging and scoring budgets (the demo's settings type)"""
    synth_snippets: int
    """English snippets the science QA is generated from"""
    synth_problems: int
    """LeetCode problems the code QA is generated from"""
    synth_per_discipline: int
    """most science snippets of one discipline"""
    synth_max_new_tokens: int = 160
    """tokens per generation"""
    synth_batch_size: int = 24
    """prompts per generate call (transformers backend)"""
    recipe_overrides: dict[str, Any] = field(default_factory=dict)
    """what every sweep in the folder trains this size's model with (RECIPE_OVERRIDES, the sweeps'
    `overrides_from`): the proxy recipes are set for the tiny proxy"""


def _annotate(size: str) -> DemoSettings:
    return DemoSettings(size=size, tag_max_length=128, score_max_doc_tokens=128, synth_snippets=0, synth_problems=0,
                        synth_max_new_tokens=0, synth_threads=2, eval_max_doc_tokens=128, lm_eval_limit=0)


GPU_LEARNING_RATES = {"schedule.lr_init": 1.0e-6, "schedule.lr_max": 1.0e-4, "schedule.lr_min": 1.0e-5}
"""SmolLM2-135M's learning rates at the proxy recipes' 1024-token steps (the tiny proxy's ratio
init:max:min = 1:100:10). A CPT learning rate is the base model's, not the proxy's: the tiny proxy's
peak 1e-3 made SmolLM2 worse on every stream, the ones it trained on included; a probe of peaks 3e-5,
1e-4, 3e-4 and 1e-3 (static mixture, 24 steps, one seed) put 1e-4 lowest overall and on 9 of the 10
validation streams (3e-4 on en_computing)."""

# tiny: a budget for 2 CPU cores. SmolLM2-135M-Instruct keeps about half a pair per science generation
# and most code generations (each output's summary says how many, how fast): 400 snippets, at most 60
# of a discipline (the corpus has fewer medicine snippets than that), and 60 LeetCode problems. The
# journal is kept, so raising them generates only what is new; gpu: the same set for now.
SETTINGS: dict[str, PrepareSettings] = {
    "tiny": PrepareSettings(size="tiny", annotate=_annotate("tiny"), synth_snippets=400, synth_problems=60,
                            synth_per_discipline=60),
    "gpu": PrepareSettings(size="gpu", annotate=_annotate("gpu"), synth_snippets=400, synth_problems=60,
                           synth_per_discipline=60, recipe_overrides=GPU_LEARNING_RATES),
}


def build_prepare_steps(settings: PrepareSettings, threads: int = 2) -> list[Step]:
    """The steps of `cpt sweep prepare` at this size, arguments relative to the sweep folder."""
    from cpt.assets import smollm2_hf_dir

    smollm2 = str(smollm2_hf_dir())
    return [
        Step("corpus", action=corpus_action(CORPUS_SIZE), outputs=("corpus/manifest.json",),
             describe=f"build corpus/*.jsonl (size {CORPUS_SIZE}) from installed packages"),
        Step("base-model", action=_base_model_action(settings.size, smollm2), outputs=(f"{BASE_HF}/config.json",),
             describe="the proxy (cached) or SmolLM2-135M as models/base_hf"),
        *_shard_steps(),
        *_annotate_steps(settings.annotate, BASE_HF),
        Step("convert", ["convert", "hf-to-mcore", BASE_HF, BASE_MCORE, "--overwrite"], (f"{BASE_MCORE}/COMPLETE",)),
        *_synth_steps(settings, smollm2, threads),  # last: the sweeps without synthetic data can start before
    ]


def _preprocess(name: str, inputs: list[str], prefix: str, *extra: str) -> Step:
    return Step(name, ["preprocess", "--input", *inputs, "--output-prefix", prefix, "--tokenizer-model", BASE_HF,
                       *extra, "--no-progress"], (f"{prefix}.manifest.json",))


def _shard_steps() -> list[Step]:
    return [_preprocess("preprocess-zh", ["corpus/zh.jsonl"], "data/zh"),
            _preprocess("preprocess-en", ["corpus/en.jsonl", "corpus/code.jsonl"], "data/en_code"),
            _preprocess("preprocess-en-general", ["corpus/en_general.jsonl"], "data/en_general")]


def _synth_steps(s: PrepareSettings, smollm2: str, threads: int) -> list[Step]:
    common = ["--model", smollm2, "--max-new-tokens", str(s.synth_max_new_tokens), "--threads", str(threads),
              "--batch-size", str(s.synth_batch_size), "--progress-every", "30"]
    snippets = ["--max-snippets", str(s.synth_snippets), "--max-per-discipline", str(s.synth_per_discipline)]
    steps = [
        Step("synth-science", ["synth", "--shards", "data/en_code", "--discipline-by", "topic", "--output",
                               "synth/science.jsonl", *snippets, "--pairs-per-snippet", "2", "--min-grounding",
                               "0.3", *common], ("synth/science.jsonl.summary.json",)),
        Step("synth-code", ["synth", "--task", "code", "--output", "synth/code.jsonl", "--max-problems",
                            str(s.synth_problems), "--k-shot", "1", *common], ("synth/code.jsonl.summary.json",)),
        _preprocess("preprocess-synthetic", ["synth/science.jsonl", "synth/code.jsonl"], "data/synthetic",
                    "--keep-fields", SYNTH_FIELDS, "--on-error", "skip", "--corpus-root", "synth"),
    ]
    for rate in CORRUPT_RATES:
        tag = f"c{round(rate * 100)}"
        split = ["--valid-holdout", str(SYNTH_VALID_HOLDOUT), "--valid-holdout-seed", str(SYNTH_VALID_HOLDOUT_SEED),
                 "--output-corpus-root", f"synth/{tag}"]
        steps += [
            Step(f"synth-corrupt-{tag}", action=_copy_journal_action(tag), outputs=(f"synth/{tag}",),
                 describe=f"copy the generation journals into synth/{tag}/ (no generation again)"),
            Step(f"synth-science-{tag}", ["synth", "--shards", "data/en_code", "--discipline-by", "topic", "--output",
                                          f"synth/{tag}/science.jsonl", *snippets, "--pairs-per-snippet", "2",
                                          "--min-grounding", "0.3", "--corrupt-rate", str(rate), *split,
                                          *common], (f"synth/{tag}/science.jsonl.summary.json",)),
            Step(f"synth-code-{tag}", ["synth", "--task", "code", "--output", f"synth/{tag}/code.jsonl",
                                       "--max-problems", str(s.synth_problems), "--k-shot", "1", "--corrupt-rate",
                                       str(rate), *split, *common], (f"synth/{tag}/code.jsonl.summary.json",)),
            _preprocess(f"preprocess-synthetic-{tag}", [f"synth/{tag}/science.jsonl", f"synth/{tag}/code.jsonl"],
                        f"data/synthetic_{tag}", "--keep-fields", SYNTH_FIELDS, "--on-error", "skip",
                        "--corpus-root", f"synth/{tag}"),
        ]
    return steps


def write_recipe_overrides(root: Path, settings: PrepareSettings) -> bool:
    """DIR/recipe_overrides.yaml with the size's overrides, unless the folder has one (a user's edit is
    kept). True when written."""
    import yaml

    from cpt.io import write_text_atomic

    path = root / RECIPE_OVERRIDES
    if path.is_file():
        return False
    header = (f"# Recipe overrides every shipped sweep applies in this folder (--size {settings.size}), after the\n"
              "# imported model's keys and before the sweep's own (the sweeps' `overrides_from`). Edit to change\n"
              "# what this folder's model trains with; `cpt sweep prepare` never overwrites it.\n")
    body = yaml.safe_dump(settings.recipe_overrides, sort_keys=False) if settings.recipe_overrides else "{}\n"
    write_text_atomic(path, header + body)
    return True


def _base_model_action(size: str, smollm2: str) -> Callable[[Path], object]:
    def action(root: Path) -> object:
        from cpt.io import atomic_dir

        if size == "tiny":
            from cpt.sweep.proxy_model import proxy_hf_dir

            source = proxy_hf_dir()
        else:
            source = Path(smollm2)
        with atomic_dir(root / BASE_HF) as tmp:
            for path in sorted(source.iterdir()):
                if path.is_file():
                    shutil.copy2(path, tmp / path.name)
        return {"base_model": str(source), "size": size}
    return action


def _copy_journal_action(tag: str) -> Callable[[Path], object]:
    def action(root: Path) -> object:
        from cpt.io import atomic_dir
        from cpt.synth.pipeline import journal_path

        with atomic_dir(root / "synth" / tag) as tmp:
            for name in ("science.jsonl", "code.jsonl"):
                shutil.copy2(journal_path(root / "synth" / name), journal_path(tmp / name))
        return {"journals": f"synth/{tag}"}
    return action


__all__ = ["BASE_HF", "BASE_MCORE", "CORRUPT_RATES", "RECIPE_OVERRIDES", "SETTINGS", "PrepareSettings",
           "build_prepare_steps", "write_recipe_overrides"]
