"""From a sweep file to runs: every (arm, seed) with its resolved, validated stage recipes.

A run's folder is `SWEEP_DIR/runs/ARM/seed-S/`; stage k trains into `RUN/STAGE/` from the recipe
`RUN/STAGE.yaml` written here, and stage k > 1 starts from stage k-1's checkpoints (its
`training.load`). Overrides apply in the order: the `model:` keys of `model_from`'s model.yaml (the
model the workdir imported), the workdir's `overrides_from` file (what that model trains with), the
stage's own, the sweep's, the arm's, the seed keys, the seed's own
(`seed_overrides`), then the run's folders (which no override can move). A run is fingerprinted by its
resolved recipes and training command: a folder planned with another fingerprint is refused
rather than mixed into the results.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cpt.sweep.spec import SweepError, SweepSpec

PLAN_VERSION = 1
RUN_FILE = "run.json"


@dataclass(frozen=True, slots=True)
class Run:
    arm: str
    seed: int
    folder: Path
    """absolute run folder"""
    stages: list[tuple[str, dict[str, Any]]]
    """(stage name, resolved recipe dict), in order"""
    fingerprint: str
    evals: list[tuple[str, list[str]]] = dataclasses.field(default_factory=list)
    """(name, `cpt` arguments with the placeholders filled) of each eval after the last stage"""

    @property
    def name(self) -> str:
        return f"{self.arm}.seed-{self.seed}"

    def stage_dir(self, stage: str) -> Path:
        return self.folder / stage

    def recipe_path(self, stage: str) -> Path:
        return self.folder / f"{stage}.yaml"


def _set(node: Any, parts: list[str], value: Any, key: str) -> None:
    head, rest = parts[0], parts[1:]
    if isinstance(node, list):
        if head == "*":
            targets = range(len(node))
        elif head.lstrip("-").isdigit() and -len(node) <= int(head) < len(node):
            targets = [int(head)]
        else:
            raise SweepError(f"{key}: '{head}' is not an index of a list of {len(node)}")
        for i in targets:
            if rest:
                _set(node[i], rest, value, key)
            else:
                node[i] = copy.deepcopy(value)
        return
    if not isinstance(node, dict):
        raise SweepError(f"{key}: '{head}' is below a value, not a section")
    if not rest:
        node[head] = copy.deepcopy(value)
        return
    _set(node.setdefault(head, {}), rest, value, key)


def apply_override(recipe: dict[str, Any], key: str, value: Any) -> None:
    """Set dotted `key` (numbers index lists, `*` is every element) to `value` in place."""
    _set(recipe, key.split("."), value, key)


def _stage_overrides(overrides: dict[str, Any], stage: str) -> list[tuple[str, Any]]:
    out = []
    for key, value in overrides.items():
        prefix, sep, rest = key.partition(":")
        if not sep:
            out.append((key, value))
        elif prefix == stage:
            out.append((rest, value))
    return out


def _not_prepared(spec: SweepSpec, key: str, path: Path) -> SweepError:
    state = spec.workdir / "prepare.json"  # a folder being prepared keeps its size
    size = json.loads(state.read_text()).get("size", "tiny") if state.is_file() else "tiny"
    return SweepError(f"{spec.path}: {key}: {path} does not exist; build the workdir first "
                      f"(`cpt sweep prepare {spec.workdir} --size {size}`, or pass --workdir)")


def imported_model(spec: SweepSpec) -> dict[str, Any]:
    """`model.KEY -> value` of the workdir's import named by `model_from` ({} when not set)."""
    if not spec.model_from:
        return {}
    path = spec.workdir / spec.model_from / "model.yaml"
    if not path.is_file():
        raise _not_prepared(spec, "model_from", path)
    model = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("model")
    if not isinstance(model, dict) or not model:
        raise SweepError(f"{path}: expected a 'model:' mapping (written by `cpt convert hf-to-mcore`)")
    return {f"model.{key}": value for key, value in model.items()}


def workdir_overrides(spec: SweepSpec) -> dict[str, Any]:
    """The recipe overrides of the workdir's `overrides_from` file ({} when not set)."""
    if not spec.overrides_from:
        return {}
    path = spec.workdir / spec.overrides_from
    if not path.is_file():
        raise _not_prepared(spec, "overrides_from", path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SweepError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    data = {} if data is None else data
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise SweepError(f"{path}: expected a mapping of recipe keys (e.g. schedule.lr_max: 1.0e-4)")
    return data


def resolve_stage(spec: SweepSpec, stage_index: int, arm_overrides: dict[str, Any], seed: int,
                  run_folder: Path, cache_dir: Path, prepared: dict[str, Any] | None = None) -> dict[str, Any]:
    """One stage's recipe dict for one run, validated by the recipe schema (errors name the key).
    prepared: the workdir's overrides, applied first (model_from's model keys, the overrides_from file)."""
    from cpt.config import RecipeError, recipe_from_dict

    stage = spec.stages[stage_index]
    where = f"{spec.path}: arm {run_folder.parent.name} seed {seed} stage {stage.stage}"
    try:
        recipe = yaml.safe_load(stage.recipe.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise SweepError(f"{stage.recipe}: not valid YAML ({str(exc).splitlines()[0]})") from None
    try:
        for source in (prepared or {}, stage.overrides, spec.overrides, arm_overrides):
            for key, value in _stage_overrides(source, stage.stage):
                apply_override(recipe, key, value)
        for key in spec.seed_keys:
            apply_override(recipe, key, seed)
        for key, value in _stage_overrides(spec.seed_overrides.get(seed, {}), stage.stage):
            apply_override(recipe, key, value)
        training = recipe.setdefault("training", {})
        training["output_dir"] = str(run_folder / stage.stage)
        training.setdefault("stage", stage.stage)
        if stage_index > 0:
            training["load"] = str(run_folder / spec.stages[stage_index - 1].stage / "checkpoints")
        if isinstance(recipe.get("data"), dict) and recipe["data"].get("streams"):
            recipe["data"].setdefault("cache_dir", str(cache_dir))
        recipe_from_dict(copy.deepcopy(recipe))
    except (SweepError, RecipeError) as exc:
        raise SweepError(f"{where}: {exc}") from None
    return recipe


def fingerprint(stages: list[tuple[str, dict[str, Any]]], train_command: list[str], workdir: Path,
                evals: list[tuple[str, list[str]]] | None = None) -> str:
    content: dict[str, Any] = {"version": PLAN_VERSION, "stages": stages, "train_command": train_command,
                               "workdir": str(workdir)}
    if evals:  # only when there are some: sweeps without evals keep the fingerprints they had
        content["evals"] = evals
    blob = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def resolve_evals(spec: SweepSpec, run_folder: Path) -> list[tuple[str, list[str]]]:
    """Each eval's `cpt` arguments for one run: {run}, {recipe}, {checkpoints} of its last stage."""
    last = spec.stages[-1].stage
    values = {"{run}": str(run_folder), "{recipe}": str(run_folder / f"{last}.yaml"),
              "{checkpoints}": str(run_folder / last / "checkpoints")}
    out = []
    for e in spec.evals:
        args = []
        for a in e.args:
            for key, value in values.items():
                a = a.replace(key, value)
            args.append(a)
        out.append((e.name, args))
    return out


def plan_runs(spec: SweepSpec, sweep_dir: Path) -> list[Run]:
    """Every (arm, seed) run, arms in sweep order, seeds in file order within an arm."""
    sweep_dir = sweep_dir.absolute()
    prepared = {**imported_model(spec), **workdir_overrides(spec)}
    runs = []
    for arm in spec.arms:
        for seed in spec.seeds:
            folder = sweep_dir / "runs" / arm.name / f"seed-{seed}"
            stages = [(s.stage, resolve_stage(spec, i, arm.overrides, seed, folder, sweep_dir / "data_cache",
                                                prepared))
                      for i, s in enumerate(spec.stages)]
            evals = resolve_evals(spec, folder)
            runs.append(Run(arm.name, seed, folder, stages,
                            fingerprint(stages, spec.train_command, spec.workdir, evals), evals))
    return runs


def recipe_text(recipe: dict[str, Any]) -> str:
    """A resolved stage recipe as its RUN/STAGE.yaml file says it (what `cpt train` reads)."""
    return yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True)


def write_run_plan(run: Run, spec: SweepSpec) -> None:
    """RUN/run.json and RUN/STAGE.yaml; refuses a folder planned with another fingerprint."""
    from cpt.io import write_json_atomic, write_text_atomic

    existing = run.folder / RUN_FILE
    if existing.is_file():
        old = json.loads(existing.read_text()).get("fingerprint")
        if old != run.fingerprint:
            raise SweepError(
                f"{run.folder}: planned before with other recipes, training command or workdir (fingerprint {old}, "
                f"now {run.fingerprint}); give the sweep another --out, or remove that run folder to redo it")
    for stage, recipe in run.stages:
        write_text_atomic(run.recipe_path(stage), recipe_text(recipe))
    write_json_atomic(existing, {"version": PLAN_VERSION, "arm": run.arm, "seed": run.seed,
                                 "fingerprint": run.fingerprint, "stages": [s for s, _ in run.stages],
                                 "train_command": spec.train_command, "workdir": str(spec.workdir),
                                 **({"evals": run.evals} if run.evals else {})})


__all__ = ["PLAN_VERSION", "RUN_FILE", "Run", "apply_override", "fingerprint", "imported_model", "plan_runs",
           "recipe_text", "resolve_evals", "resolve_stage", "workdir_overrides", "write_run_plan"]
