"""The sweep file: a base (one stage recipe, or a pipeline of stages), arms as recipe overrides, seeds.

    name: curriculum_zh
    workdir: ../../runs/demo            # relative paths INSIDE the recipes resolve here (default: cwd)
    model_from: models/base_mcore       # optional: every stage's model.* keys from this import's model.yaml
    overrides_from: recipe_overrides.yaml  # optional: recipe overrides the workdir holds (the size's optimizer)
    output_dir: runs/sweeps/curriculum  # SWEEP_DIR, relative to where `cpt sweep` runs (--out wins)
    base:                               # stages in order; stage k > 1 starts from stage k-1's checkpoint
      - {stage: stage1, recipe: ../../recipes/demo/stage1.yaml}
      - {stage: stage2, recipe: ../../recipes/demo/stage2.yaml}
    overrides: {training.eval_every: 4}       # every arm, every stage
    axes:                                     # arms: the product of the axes' values ...
      order: {lh: {data.streams.0.order: ppl_asc}, hl: {data.streams.0.order: ppl_desc}}
    arms:                                     # ... and/or a list
      - {name: no_synthetic, overrides: {"stage2:data.streams.5.weight": 0}}
    seeds: [1, 2, 3]
    seed_keys: [training.seed]                # recipe keys that take the seed
    seed_overrides:                           # optional: what else a seed changes, in every arm (the
      1: {data.streams.0.filter: 'doc_hash < 0.1'}          # arms pair on it: e.g. which sample of the
      2: {data.streams.0.filter: '0.1 <= doc_hash < 0.2'}   # documents a run reads)
    evals:                                    # `cpt eval` commands after the last stage, in the workdir;
      - {name: sciqa, args: [eval, qa-nll, --model, "{checkpoints}", --recipe, "{recipe}", --stream, synthetic]}
    report: {baseline: hl, metrics: [ppl/zh_humanities], higher_is_better: []}

An eval's `args` follow `cpt`; `{run}`, `{recipe}` and `{checkpoints}` become the run folder, the
last stage's recipe and its checkpoints; `--out RUN/evals/NAME.json` is appended, and the numbers
under that JSON's `metrics` are collected as `NAME/KEY` beside the trainer's per-stream figures.

An override key is a dotted recipe path; a number picks a list element (`data.streams.0.order`),
`*` every element (`data.streams.*.seed`), and a `STAGE:` prefix limits it to one stage. Paths of
the sweep file itself (`recipe`, `workdir`) are relative to the sweep file; `output_dir` to the
current folder. Every error names the file and the key.
"""
from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$")
TOP_KEYS = ("name", "workdir", "model_from", "overrides_from", "output_dir", "base", "overrides", "axes", "arms",
            "seeds", "seed_keys", "seed_overrides", "train_command", "evals", "report")
STAGE_KEYS = ("stage", "recipe", "overrides")
ARM_KEYS = ("name", "overrides")
EVAL_KEYS = ("name", "args")
EVAL_PLACEHOLDERS = ("{run}", "{recipe}", "{checkpoints}")
REPORT_KEYS = ("baseline", "metrics", "higher_is_better", "confidence")


class SweepError(ValueError):
    """A sweep file error: one line naming the file and the key."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StageSpec:
    stage: str
    """stage name: the run's folder for it and the prefix of stage-only overrides"""
    recipe: Path
    """the stage's recipe YAML (absolute)"""
    overrides: dict[str, Any] = field(default_factory=dict)
    """overrides of this stage only (before the sweep's and the arm's)"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Arm:
    name: str
    """file-safe arm name (axis values joined by '.')"""
    overrides: dict[str, Any]
    """dotted key (optionally 'STAGE:key') -> value"""


@dataclass(frozen=True, slots=True, kw_only=True)
class EvalSpec:
    name: str
    """file-safe name: the output RUN/evals/NAME.json and the metrics' prefix NAME/"""
    args: list[str]
    """the `cpt` arguments (placeholders {run}, {recipe}, {checkpoints}); --out is appended"""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportSpec:
    baseline: Optional[str] = None
    """arm the others are compared with (paired, same seeds); None: no comparison"""
    metrics: list[str] = field(default_factory=list)
    """metrics in the table; empty: every collected ppl metric"""
    higher_is_better: list[str] = field(default_factory=list)
    """metrics where higher is better (all others: lower is better, as perplexity and loss)"""
    confidence: float = 0.95
    """confidence of the t intervals"""


@dataclass(frozen=True, slots=True, kw_only=True)
class SweepSpec:
    name: str
    """the sweep's name (report titles)"""
    path: Path
    """the sweep file (absolute)"""
    workdir: Path
    """folder the training commands run in: relative paths in the recipes resolve here"""
    model_from: Optional[str] = None
    """an import folder relative to workdir: its model.yaml's `model:` keys override every stage's (before
    any other override), so one sweep file trains whichever model the workdir imported (`--size tiny|gpu`)"""
    overrides_from: Optional[str] = None
    """a YAML mapping of recipe overrides in workdir, applied after model_from's keys and before every other
    override: what the prepared folder says its model trains with (`cpt sweep prepare` writes the size's
    learning rates there), so the same sweep file fits either size"""
    output_dir: Optional[Path]
    """SWEEP_DIR when --out is not given"""
    stages: list[StageSpec]
    """the base: stages in order"""
    overrides: dict[str, Any]
    """overrides of every arm"""
    arms: list[Arm]
    """every arm, product arms first"""
    seeds: list[int]
    """seeds every arm runs with"""
    seed_keys: list[str]
    """recipe keys set to the seed"""
    seed_overrides: dict[int, dict[str, Any]] = field(default_factory=dict)
    """per seed, overrides applied to every arm after the arm's own (a seed missing here has none): what a
    seed changes besides seed_keys, e.g. a disjoint sample of documents per seed, so the t interval over
    seeds counts the sampling of the documents and every arm reads the same sample within a seed"""
    train_command: list[str]
    """argv prefix of a stage's training (the recipe path follows); default: this Python's `cpt train`"""
    report: ReportSpec
    """what `cpt sweep report` compares"""
    evals: list[EvalSpec] = field(default_factory=list)
    """`cpt eval` commands run after a run's last stage; their metrics are collected with the run's"""


def _fail(path: Path, key: str, message: str) -> SweepError:
    return SweepError(f"{path}: {key}: {message}")


def _check_keys(path: Path, where: str, data: Any, allowed: tuple[str, ...]) -> dict:
    if not isinstance(data, dict):
        raise _fail(path, where or "top level", f"expected a mapping, got {type(data).__name__}")
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise _fail(path, f"{where + '.' if where else ''}{key}", f"unknown key{hint}")
    return data


def _overrides(path: Path, where: str, data: Any) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) and k for k in data):
        raise _fail(path, where, "expected a mapping of dotted recipe keys to values")
    return dict(data)


def _name(path: Path, where: str, value: Any) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise _fail(path, where, f"expected a file-safe name (letters, digits, _ . = + -), got {value!r}")
    return value


def _stages(path: Path, data: Any) -> list[StageSpec]:
    if isinstance(data, (str, dict)):
        data = [data]
    if not isinstance(data, list) or not data:
        raise _fail(path, "base", "expected a recipe path or a list of stages {stage, recipe, overrides}")
    stages = []
    for i, item in enumerate(data):
        if isinstance(item, str):
            item = {"recipe": item}
        item = _check_keys(path, f"base[{i}]", item, STAGE_KEYS)
        if not isinstance(item.get("recipe"), str):
            raise _fail(path, f"base[{i}].recipe", "required: the stage's recipe YAML")
        recipe = (path.parent / item["recipe"]).resolve()
        if not recipe.is_file():
            raise _fail(path, f"base[{i}].recipe", f"{recipe} does not exist")
        stage = _name(path, f"base[{i}].stage", item.get("stage", f"stage{i + 1}"))
        stages.append(StageSpec(stage=stage, recipe=recipe, overrides=_overrides(path, f"base[{i}].overrides",
                                                                               item.get("overrides"))))
    names = [s.stage for s in stages]
    if len(set(names)) != len(names):
        raise _fail(path, "base", f"stage names must be unique, got {names}")
    return stages


def _product_arms(path: Path, axes: Any) -> list[Arm]:
    if axes is None:
        return []
    if not isinstance(axes, dict) or not axes:
        raise _fail(path, "axes", "expected a mapping axis -> {value name: overrides}")
    choices = []
    for axis, values in axes.items():
        if not isinstance(values, dict) or not values:
            raise _fail(path, f"axes.{axis}", "expected a mapping value name -> overrides")
        choices.append([(_name(path, f"axes.{axis}.{v}", v), _overrides(path, f"axes.{axis}.{v}", o))
                        for v, o in values.items()])
    arms = []
    for combo in itertools.product(*choices):
        merged: dict[str, Any] = {}
        for _, o in combo:
            merged.update(o)
        arms.append(Arm(name=".".join(v for v, _ in combo), overrides=merged))
    return arms


def _listed_arms(path: Path, arms: Any) -> list[Arm]:
    if arms is None:
        return []
    if not isinstance(arms, list):
        raise _fail(path, "arms", "expected a list of {name, overrides}")
    out = []
    for i, item in enumerate(arms):
        item = _check_keys(path, f"arms[{i}]", item, ARM_KEYS)
        out.append(Arm(name=_name(path, f"arms[{i}].name", item.get("name")),
                       overrides=_overrides(path, f"arms[{i}].overrides", item.get("overrides"))))
    return out


def _seeds(path: Path, data: Any) -> list[int]:
    if isinstance(data, int) and not isinstance(data, bool):
        data = [data]
    if not isinstance(data, list) or not data or not all(isinstance(s, int) and not isinstance(s, bool) for s in data):
        raise _fail(path, "seeds", f"expected a non-empty list of integers, got {data!r}")
    if len(set(data)) != len(data):
        raise _fail(path, "seeds", f"seeds must be unique, got {data}")
    return list(data)


def _seed_overrides(path: Path, data: Any, seeds: list[int]) -> dict[int, dict[str, Any]]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise _fail(path, "seed_overrides", "expected a mapping of seeds to {dotted recipe key: value}")
    unknown = [k for k in data if k not in seeds or isinstance(k, bool)]
    if unknown:
        raise _fail(path, "seed_overrides", f"{unknown[0]!r} is not one of the seeds {seeds}")
    return {seed: _overrides(path, f"seed_overrides.{seed}", data[seed]) for seed in data}


def _strings(path: Path, key: str, data: Any, default: list[str]) -> list[str]:
    if data is None:
        return list(default)
    if not isinstance(data, list) or not all(isinstance(s, str) and s for s in data):
        raise _fail(path, key, f"expected a list of strings, got {data!r}")
    return list(data)


def _evals(path: Path, data: Any) -> list[EvalSpec]:
    if data is None:
        return []
    if not isinstance(data, list):
        raise _fail(path, "evals", "expected a list of {name, args}")
    out = []
    for i, item in enumerate(data):
        item = _check_keys(path, f"evals[{i}]", item, EVAL_KEYS)
        name = _name(path, f"evals[{i}].name", item.get("name"))
        args = _strings(path, f"evals[{i}].args", item.get("args"), [])
        if not args or args[0] != "eval":
            raise _fail(path, f"evals[{i}].args", f"expected `cpt eval ...` arguments starting with 'eval', got {args}")
        if "--out" in args:
            raise _fail(path, f"evals[{i}].args", "--out is set by the sweep (RUN/evals/NAME.json)")
        out.append(EvalSpec(name=name, args=args))
    names = [e.name for e in out]
    if len(set(names)) != len(names):
        raise _fail(path, "evals", f"eval names must be unique, got {names}")
    return out


def _report(path: Path, data: Any, arm_names: list[str]) -> ReportSpec:
    data = _check_keys(path, "report", data or {}, REPORT_KEYS)
    baseline = data.get("baseline")
    if baseline is not None and baseline not in arm_names:
        raise _fail(path, "report.baseline", f"{baseline!r} is not an arm (arms: {', '.join(arm_names)})")
    confidence = data.get("confidence", 0.95)
    if not isinstance(confidence, (int, float)) or not 0.0 < confidence < 1.0:
        raise _fail(path, "report.confidence", f"expected a number in (0, 1), got {confidence!r}")
    return ReportSpec(baseline=baseline, metrics=_strings(path, "report.metrics", data.get("metrics"), []),
                      higher_is_better=_strings(path, "report.higher_is_better", data.get("higher_is_better"), []),
                      confidence=float(confidence))


def parse_sweep(data: Any, path: Path, default_train_command: list[str]) -> SweepSpec:
    """Validate a loaded sweep file; every error is a SweepError naming `path` and the key."""
    data = _check_keys(path, "", data, TOP_KEYS)
    stages = _stages(path, data.get("base"))
    arms = _product_arms(path, data.get("axes")) + _listed_arms(path, data.get("arms"))
    if not arms:
        raise _fail(path, "arms", "no arm: give axes (a product) and/or arms (a list)")
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise _fail(path, "arms", f"arm names must be unique, got {names}")
    stage_names = {s.stage for s in stages}
    seeds = _seeds(path, data.get("seeds"))
    seed_overrides = _seed_overrides(path, data.get("seed_overrides"), seeds)
    for arm in [*arms, Arm(name="overrides", overrides=_overrides(path, "overrides", data.get("overrides"))),
                *(Arm(name=f"seed_overrides.{k}", overrides=v) for k, v in seed_overrides.items())]:
        for key in arm.overrides:
            stage, sep, _ = key.partition(":")
            if sep and stage not in stage_names:
                raise _fail(path, f"{arm.name}: {key}", f"no stage {stage!r} (stages: {', '.join(sorted(stage_names))})")
    workdir = data.get("workdir")
    output_dir = data.get("output_dir")
    for key, value in (("workdir", workdir), ("output_dir", output_dir), ("name", data.get("name")),
                       ("model_from", data.get("model_from")), ("overrides_from", data.get("overrides_from"))):
        if value is not None and not isinstance(value, str):
            raise _fail(path, key, f"expected a string, got {value!r}")
    return SweepSpec(
        name=_name(path, "name", data.get("name", path.stem)), path=path,
        workdir=(path.parent / workdir).resolve() if workdir else Path.cwd(), model_from=data.get("model_from"),
        overrides_from=data.get("overrides_from"),
        output_dir=Path(output_dir) if output_dir else None, stages=stages,
        overrides=_overrides(path, "overrides", data.get("overrides")), arms=arms, seeds=seeds,
        seed_keys=_strings(path, "seed_keys", data.get("seed_keys"), ["training.seed"]), seed_overrides=seed_overrides,
        train_command=_strings(path, "train_command", data.get("train_command"), default_train_command),
        report=_report(path, data.get("report"), names), evals=_evals(path, data.get("evals")),
    )


def load_sweep(path: str | Path, default_train_command: list[str]) -> SweepSpec:
    """Read and validate a sweep file."""
    path = Path(path).resolve()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SweepError(f"{path}: sweep file not found") from None
    except yaml.YAMLError as exc:
        raise SweepError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_sweep(data, path, default_train_command)


__all__ = ["Arm", "EvalSpec", "ReportSpec", "StageSpec", "SweepError", "SweepSpec", "load_sweep", "parse_sweep"]
