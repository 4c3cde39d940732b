"""The demo's steps, in order, at a size: every one a `cpt` command run in the demo folder.

    corpus            zh / en / code / en_general jsonl from installed packages (cpt.demo.corpus)
    base-model        (tiny only) a random 2-layer Llama with SmolLM2's tokenizer
    preprocess-*      cpt preprocess: SmolLM2 tokenizer -> data/zh, data/en_code, data/en_general shards
    tag-train, tag    cpt tag-train (multilingual USE encoder) on the labelled check sets, cpt tag
    score             cpt score: SmolLM2 perplexity of the Chinese documents (the ppl_asc curriculum)
    synth-*           cpt synth (SmolLM2-135M-Instruct): science QA from snippets, code QA from LeetCode
    preprocess-synthetic          -> data/synthetic
    convert           cpt convert hf-to-mcore: the base model -> models/base_mcore
    eval-*-before     cpt eval ppl (per-stream held-out PPL) and cpt eval lm-eval of the base model
    stage1, stage2    cpt train recipes/demo/stage{1,2}.yaml (stage 2 continues stage 1)
    export            cpt convert mcore-to-hf: stage 2's checkpoint -> models/export
    eval-*-after      the same on the export
    report            cpt report stage1 stage2

Recipes keep their shard paths relative to the demo folder (they run from it); what differs by
size is passed as `key=value` overrides, and the `model:` keys always come from the import's
model.yaml, so the recipe trains exactly the model that was imported.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from cpt.demo.corpus import build_corpus, is_complete
from cpt.demo.runner import Step

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "demo"
BASE_MCORE = "models/base_mcore"
EXPORT = "models/export"
LM_EVAL_TASK = "cpt_next_sentence"
TAG_ENCODER = "use-m3"
"""The demo corpus is Chinese and English: the multilingual encoder (what `cpt tag-train` picks for it anyway)."""


@dataclass(frozen=True)
class DemoSettings:
    """What differs between the full demo and the CI-sized one."""

    size: str
    tag_max_length: int
    score_max_doc_tokens: int
    synth_snippets: int
    synth_problems: int
    """LeetCode problems for code QA: >= 6, so the synthetic stream has a held-out document (the recipes'
    valid_holdout_seed 2 holds out lines 4 and 6 of synth/code.jsonl; document ids hash file name and line)."""
    synth_max_new_tokens: int
    synth_threads: int
    """torch threads while generating: 1 where the CPU is shared (CI), as many as the cores otherwise."""
    eval_max_doc_tokens: int
    lm_eval_limit: int
    train_overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Extra `key=value` overrides per stage (the full demo uses the recipes as written)."""


_TINY_TRAIN = (
    "training.seq_length=64", "training.micro_batch_size=2", "training.global_batch_size=2",
    "training.eval_every=2", "schedule.lr_max=1.0e-3", "schedule.lr_min=1.0e-4",
    "schedule.warmup_tokens=128", "schedule.stable_tokens=384", "schedule.decay_tokens=256",
)

SETTINGS: dict[str, DemoSettings] = {
    # full: 10 min measured on 2 quiet cores (docs/demo/result.json); generation (synth) and lm-eval are the slow
    # parts after training, so they get small budgets (the PPL table is the measure that counts)
    "full": DemoSettings(size="full", tag_max_length=128, score_max_doc_tokens=64, synth_snippets=8,
                         synth_problems=8, synth_max_new_tokens=160, synth_threads=2, eval_max_doc_tokens=256,
                         lm_eval_limit=12),
    "tiny": DemoSettings(size="tiny", tag_max_length=64, score_max_doc_tokens=32, synth_snippets=1,
                         synth_problems=6, synth_max_new_tokens=48, synth_threads=1, eval_max_doc_tokens=64, lm_eval_limit=4,
                         train_overrides={"stage1": (*_TINY_TRAIN, "training.train_tokens=512"),
                                          "stage2": (*_TINY_TRAIN, "training.train_tokens=256")}),
}


def model_overrides(root: Path) -> list[str]:
    """`model.KEY=VALUE` for every key of the import's model.yaml (written by `cpt convert`)."""
    path = root / BASE_MCORE / "model.yaml"
    model = (yaml.safe_load(path.read_text()) or {}).get("model")
    if not isinstance(model, dict):
        raise ValueError(f"{path}: expected a 'model:' mapping")
    return [f"model.{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
            for k, v in model.items()]


def base_hf(root: Path, settings: DemoSettings) -> str:
    """The HF folder the demo starts from: SmolLM2-135M (asset), or the tiny Llama."""
    if settings.size == "tiny":
        return "models/tiny_hf"
    from cpt.assets import smollm2_hf_dir

    return str(smollm2_hf_dir())


def build_steps(root: Path, settings: DemoSettings) -> list[Step]:
    """The demo's steps for this size (arguments relative to the demo folder `root`), in order."""
    from cpt.assets import smollm2_hf_dir

    smollm2 = str(smollm2_hf_dir())
    model = base_hf(root, settings)
    return [*_data_steps(settings, smollm2), *_annotate_steps(settings, model), *_synth_steps(settings, smollm2),
            *_train_steps(root, settings, model)]


def _data_steps(s: DemoSettings, smollm2: str) -> list[Step]:
    """corpus (and at tiny size the random base model), then the three shard sets."""
    steps = [Step("corpus", action=corpus_action(s.size), outputs=("corpus/manifest.json",),
                  describe="build corpus/*.jsonl from installed packages")]
    if s.size == "tiny":
        steps.append(Step("base-model", action=_tiny_model_action(smollm2), outputs=("models/tiny_hf/config.json",),
                          describe="random-init tiny Llama with SmolLM2's tokenizer"))
    return steps + [
        Step("preprocess-zh", ["preprocess", "--input", "corpus/zh.jsonl", "--output-prefix", "data/zh",
                               "--tokenizer-model", smollm2, "--no-progress"], ("data/zh.manifest.json",)),
        Step("preprocess-en", ["preprocess", "--input", "corpus/en.jsonl", "corpus/code.jsonl",
                               "--output-prefix", "data/en_code", "--tokenizer-model", smollm2, "--no-progress"],
             ("data/en_code.manifest.json",)),
        # English no stage trains on (weight 0, validated): does the model keep the English it had?
        Step("preprocess-en-general", ["preprocess", "--input", "corpus/en_general.jsonl", "--output-prefix",
                                       "data/en_general", "--tokenizer-model", smollm2, "--no-progress"],
             ("data/en_general.manifest.json",)),
    ]


def _annotate_steps(s: DemoSettings, model: str) -> list[Step]:
    """Topics (the multilingual encoder: the corpus is Chinese and English) and the Chinese perplexities."""
    return [
        # the labelled check sets (corpus/tag_train.jsonl), 20% held out for the printed report
        Step("tag-train", ["tag-train", "--train", "corpus/tag_train.jsonl", "--encoder", TAG_ENCODER,
                           "--out", "models/topic_clf", "--max-length", str(s.tag_max_length)],
             ("models/topic_clf",)),
        Step("tag", ["tag", "--model", "models/topic_clf", "data/zh", "data/en_code", "--no-progress"],
             ("data/zh.topic.summary.json", "data/en_code.topic.summary.json")),
        Step("score", ["score", "--model", model, "data/zh", "--max-length", "128",
                       "--max-doc-tokens", str(s.score_max_doc_tokens), "--no-progress"],
             ("data/zh.ppl.summary.json",)),
    ]


def _synth_steps(s: DemoSettings, smollm2: str) -> list[Step]:
    """Science QA from tagged English snippets (SmolLM2-135M often misses the format: few pairs kept) and
    code QA from LeetCode problems (the problem is the question: every generation is kept), tokenized."""
    return [
        Step("synth-science", ["synth", "--shards", "data/en_code", "--discipline-by", "topic",
                               "--output", "synth/science.jsonl", "--model", smollm2,
                               "--max-snippets", str(s.synth_snippets), "--pairs-per-snippet", "2",
                               "--max-new-tokens", str(s.synth_max_new_tokens), "--threads", str(s.synth_threads),
                               "--min-grounding", "0.3", "--progress-every", "30"],
             ("synth/science.jsonl.summary.json",)),
        Step("synth-code", ["synth", "--task", "code", "--output", "synth/code.jsonl", "--model", smollm2,
                            "--max-problems", str(s.synth_problems), "--k-shot", "1",
                            "--max-new-tokens", str(s.synth_max_new_tokens), "--threads", str(s.synth_threads),
                            "--progress-every", "30"],
             ("synth/code.jsonl.summary.json",)),
        # --on-error skip: science.jsonl may be empty (counted in data/synthetic.summary.json)
        Step("preprocess-synthetic", ["preprocess", "--input", "synth/science.jsonl", "synth/code.jsonl",
                                      "--output-prefix", "data/synthetic", "--tokenizer-model", smollm2,
                                      "--keep-fields", "discipline", "--on-error", "skip", "--no-progress"],
             ("data/synthetic.manifest.json",)),
    ]


def _train_steps(root: Path, s: DemoSettings, model: str) -> list[Step]:
    """Import, the base model's numbers, both stages, export, the same numbers after, the report."""
    return [
        Step("convert", ["convert", "hf-to-mcore", model, BASE_MCORE, "--overwrite"], (f"{BASE_MCORE}/COMPLETE",)),
        Step("eval-ppl-before", _ppl_argv(model, "eval/ppl_before.json", s), ("eval/ppl_before.json",)),
        Step("eval-lm-before", _lm_eval_argv(model, "eval/lm_eval_before.json", s), ("eval/lm_eval_before.json",)),
        Step("stage1", ["train", str(RECIPES / "stage1.yaml")], ("stage1/checkpoints/latest",),
             late_argv=_train_overrides(root, "stage1", s)),
        Step("stage2", ["train", str(RECIPES / "stage2.yaml")], ("stage2/checkpoints/latest",),
             late_argv=_train_overrides(root, "stage2", s)),
        Step("export", ["convert", "mcore-to-hf", "stage2/checkpoints", EXPORT, "--hf-reference", BASE_MCORE,
                        "--overwrite"], (f"{EXPORT}/config.json",)),
        Step("eval-ppl-after", [*_ppl_argv(EXPORT, "eval/ppl_after.json", s), "--compare", "eval/ppl_before.json"],
             ("eval/ppl_after.json",)),
        Step("eval-lm-after", _lm_eval_argv(EXPORT, "eval/lm_eval_after.json", s), ("eval/lm_eval_after.json",)),
        Step("report", ["report", "stage1", "stage2", "--out", "report"], ("report",)),
    ]


def corpus_action(size: str) -> Callable[[Path], object]:
    """The step that builds ROOT/corpus at `size`, or reuses it when complete (demo and sweep prepare)."""
    def action(root: Path) -> object:
        folder = root / "corpus"
        if is_complete(folder, size):
            return {"corpus": str(folder), "reused": True}
        return build_corpus(folder, size)
    return action


def _tiny_model_action(tokenizer_dir: str) -> Callable[[Path], object]:
    def action(root: Path) -> object:
        from cpt.demo.tiny_model import build_tiny_llama

        return build_tiny_llama(root / "models" / "tiny_hf", tokenizer_dir)
    return action


def _train_overrides(root: Path, stage: str, s: DemoSettings) -> Callable[[], list[str]]:
    def argv() -> list[str]:
        return [*model_overrides(root), *s.train_overrides.get(stage, ())]
    return argv


def _ppl_argv(model: str, out: str, s: DemoSettings) -> list[str]:
    # stage 2's recipe names every stream (stage 1's five + synthetic) with training's held-out split
    return ["eval", "ppl", "--model", model, "--recipe", str(RECIPES / "stage2.yaml"),
            "--max-doc-tokens", str(s.eval_max_doc_tokens), "--max-length", "256", "--out", out]


def _lm_eval_argv(model: str, out: str, s: DemoSettings) -> list[str]:
    return ["eval", "lm-eval", model, "--tasks", LM_EVAL_TASK, "--limit", str(s.lm_eval_limit), "--out", out]
