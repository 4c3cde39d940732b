"""The sweep file: arms from axes and lists, overrides (list indices, `*`, per-stage), seeds, the
resolved stage recipes of a pipeline, fingerprints that refuse a changed plan, one-line errors
naming file and key, and the frozen surface (sweep keys, `cpt sweep` options)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from cpt.cli import build_parser, main
from cpt.sweep.plan import apply_override, plan_runs, write_run_plan
from cpt.sweep.runner import DEFAULT_TRAIN_COMMAND
from cpt.sweep.spec import SweepError, load_sweep, parse_sweep
from train_fixtures import stream_recipe, write_recipe


@pytest.fixture()
def stages(tmp_path: Path) -> tuple[Path, Path]:
    one = stream_recipe("data/bilingual", tmp_path / "x", training={"train_tokens": 1024})
    one["data"]["valid_holdout"] = 0.2
    two = json.loads(json.dumps(one))
    two["training"]["stage"] = "two"
    return write_recipe(tmp_path / "s1.yaml", one), write_recipe(tmp_path / "s2.yaml", two)


def _sweep(tmp_path: Path, **data) -> Path:
    path = tmp_path / "sw.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _spec(tmp_path, stages, **data):
    data = {"base": [{"stage": "s1", "recipe": "s1.yaml"}, {"stage": "s2", "recipe": "s2.yaml",
                                                             "overrides": {"training.train_tokens": 512}}],
            "axes": {"order": {"lh": {"data.streams.1.order": "ppl_asc"}, "hl": {"data.streams.1.order": "ppl_desc"}},
                     "lr": {"a": {"schedule.lr_max": 1e-3}, "b": {"s2:schedule.lr_max": 2e-3}}},
            "arms": [{"name": "nozh", "overrides": {"s2:data.streams.1.weight": 0}}],
            "seeds": [3, 4], "seed_keys": ["training.seed", "data.streams.*.seed"], **data}
    return load_sweep(_sweep(tmp_path, **data), DEFAULT_TRAIN_COMMAND)


def test_arms_seeds_and_resolved_pipeline(tmp_path, stages):
    spec = _spec(tmp_path, stages, workdir=".")
    assert [a.name for a in spec.arms] == ["lh.a", "lh.b", "hl.a", "hl.b", "nozh"]
    assert spec.workdir == tmp_path.resolve()
    runs = plan_runs(spec, tmp_path / "out")
    assert [(r.arm, r.seed) for r in runs][:3] == [("lh.a", 3), ("lh.a", 4), ("lh.b", 3)] and len(runs) == 10
    run = runs[3]  # lh.b seed 4
    (n1, s1), (n2, s2) = run.stages
    assert (n1, n2) == ("s1", "s2")
    assert s1["data"]["streams"][1]["order"] == s2["data"]["streams"][1]["order"] == "ppl_asc"
    assert s1["schedule"]["lr_max"] == 3e-3  # arm b's lr is stage s2's only
    assert s2["schedule"]["lr_max"] == 2e-3 and s2["training"]["train_tokens"] == 512
    assert s1["training"]["train_tokens"] == 1024
    assert [st["seed"] for st in s2["data"]["streams"]] == [4, 4] and s2["training"]["seed"] == 4
    out = (tmp_path / "out").absolute()
    assert s1["training"]["output_dir"] == str(out / "runs" / "lh.b" / "seed-4" / "s1")
    assert s2["training"]["load"] == str(out / "runs" / "lh.b" / "seed-4" / "s1" / "checkpoints")
    assert "load" not in s1["training"] and s1["data"]["cache_dir"] == str(out / "data_cache")
    nozh = [r for r in runs if r.arm == "nozh"][0]
    assert nozh.stages[0][1]["data"]["streams"][1]["weight"] == 0.3 and nozh.stages[1][1]["data"]["streams"][1]["weight"] == 0
    assert len({r.fingerprint for r in runs}) == 10


def test_seed_overrides_apply_to_every_arm_after_its_own(tmp_path, stages):
    """A seed's overrides reach every arm's run of that seed (after the arm's, so they win), stage
    prefixes included; a seed without any keeps the arm's recipe; they change the fingerprint."""
    band = {3: {"data.streams.1.filter": 'lang == "zh" and doc_hash < 0.5', "s2:training.train_tokens": 256},
            4: {"data.streams.1.weight": 0.9}}
    spec = _spec(tmp_path, stages, seed_overrides=band)
    assert spec.seed_overrides == band
    runs = {(r.arm, r.seed): r for r in plan_runs(spec, tmp_path / "out")}
    plain = {(r.arm, r.seed): r for r in plan_runs(_spec(tmp_path, stages), tmp_path / "plain")}
    for arm in ("lh.a", "hl.b", "nozh"):
        (_, s1), (_, s2) = runs[(arm, 3)].stages
        assert s1["data"]["streams"][1]["filter"] == s2["data"]["streams"][1]["filter"] == band[3]["data.streams.1.filter"]
        assert s2["training"]["train_tokens"] == 256 and s1["training"]["train_tokens"] == 1024
        assert runs[(arm, 3)].fingerprint != plain[(arm, 3)].fingerprint
    (_, nozh1), (_, nozh2) = runs[("nozh", 4)].stages
    assert nozh1["data"]["streams"][1]["weight"] == nozh2["data"]["streams"][1]["weight"] == 0.9  # the seed's wins
    assert runs[("lh.a", 4)].stages[0][1]["data"]["streams"][1]["order"] == "ppl_asc"


def test_evals_fill_placeholders_and_change_the_fingerprint(tmp_path, stages):
    from cpt.sweep.collect import eval_output_metrics

    plain = plan_runs(_spec(tmp_path, stages), tmp_path / "out")
    spec = _spec(tmp_path, stages, evals=[{"name": "sciqa", "args": ["eval", "qa-nll", "--model", "{checkpoints}",
                                                                     "--recipe", "{recipe}", "--note", "{run}/x"]}])
    runs = plan_runs(spec, tmp_path / "out")
    run = runs[0]
    assert run.evals == [("sciqa", ["eval", "qa-nll", "--model", str(run.folder / "s2" / "checkpoints"),
                                    "--recipe", str(run.folder / "s2.yaml"), "--note", f"{run.folder}/x"])]
    assert [r.stages for r in runs] == [r.stages for r in plain]
    assert all(a.fingerprint != b.fingerprint for a, b in zip(runs, plain))
    write_run_plan(run, spec)
    assert json.loads((run.folder / "run.json").read_text())["evals"] == [list(e) for e in run.evals]
    out = tmp_path / "sciqa.json"
    out.write_text(json.dumps({"metrics": {"answer_nll": 2.5, "pairs": 7, "note": "x", "bad": float("nan")}}))
    assert eval_output_metrics(out, "sciqa") == {"sciqa/answer_nll": 2.5, "sciqa/pairs": 7.0}
    out.write_text(json.dumps({"streams": {}}))
    with pytest.raises(ValueError, match="no 'metrics' mapping"):
        eval_output_metrics(out, "sciqa")


def test_changed_plan_is_refused(tmp_path, stages):
    spec = _spec(tmp_path, stages)
    run = plan_runs(spec, tmp_path / "out")[0]
    write_run_plan(run, spec)
    write_run_plan(run, spec)  # the same plan again: fine
    changed = plan_runs(_spec(tmp_path, stages, overrides={"optimizer.weight_decay": 0.2}), tmp_path / "out")[0]
    with pytest.raises(SweepError, match="planned before with other recipes"):
        write_run_plan(changed, spec)


def test_apply_override_paths():
    r = {"a": {"l": [{"x": 1}, {"x": 2}]}}
    apply_override(r, "a.l.*.x", 5)
    apply_override(r, "a.l.-1.y", [1])
    apply_override(r, "b.c", "new")
    assert r == {"a": {"l": [{"x": 5}, {"x": 5, "y": [1]}]}, "b": {"c": "new"}}
    for key, match in (("a.l.2.x", "not an index of a list of 2"), ("a.l.0.x.z", "below a value")):
        with pytest.raises(SweepError, match=match):
            apply_override(r, key, 0)


@pytest.mark.parametrize("data, message", [
    ({"bogus": 1}, "bogus: unknown key"),
    ({"seeds": []}, "seeds: expected a non-empty list of integers"),
    ({"seeds": [1, 1]}, "seeds: seeds must be unique"),
    ({"axes": {"o": {"bad name": {}}}}, "axes.o.bad name: expected a file-safe name"),
    ({"arms": [{"name": "lh.a"}]}, "arms: arm names must be unique"),
    ({"arms": [{"name": "z", "overides": {}}]}, "arms[0].overides: unknown key (did you mean 'overrides'?)"),
    ({"arms": [{"name": "z", "overrides": {"s9:x": 1}}]}, "z: s9:x: no stage 's9'"),
    ({"report": {"baseline": "nope"}}, "report.baseline: 'nope' is not an arm"),
    ({"base": [{"recipe": "missing.yaml"}]}, "base[0].recipe:"),
    ({"evals": [{"name": "q", "args": ["train", "x"]}]}, "evals[0].args: expected `cpt eval ...` arguments"),
    ({"evals": [{"name": "q", "args": ["eval", "ppl", "--out", "x"]}]}, "evals[0].args: --out is set by the sweep"),
    ({"evals": [{"name": "q", "args": ["eval"]}, {"name": "q", "args": ["eval"]}]}, "evals: eval names must be unique"),
    ({"evals": {"name": "q"}}, "evals: expected a list of {name, args}"),
    ({"model_from": 3}, "model_from: expected a string"),
    ({"seed_overrides": {5: {}}}, "seed_overrides: 5 is not one of the seeds [3, 4]"),
    ({"seed_overrides": {3: ["x"]}}, "seed_overrides.3: expected a mapping of dotted recipe keys"),
    ({"seed_overrides": {3: {"s9:x": 1}}}, "seed_overrides.3: s9:x: no stage 's9'"),
])
def test_bad_sweep_files_name_the_key(tmp_path, stages, data, message):
    with pytest.raises(SweepError) as err:
        _spec(tmp_path, stages, **data)
    assert str(err.value).startswith(str((tmp_path / "sw.yaml").resolve()) + ": ") and message in str(err.value)


def test_bad_override_names_arm_seed_stage_and_recipe_key(tmp_path, stages):
    spec = _spec(tmp_path, stages, arms=[{"name": "z", "overrides": {"training.seq_lenght": 9}}])
    with pytest.raises(SweepError, match=r"arm z seed 3 stage s1: training.seq_lenght: unknown key"):
        plan_runs(spec, tmp_path / "out")


def test_cli_errors_are_one_line_and_plan_lists_runs(tmp_path, stages, capsys):
    sweep = _sweep(tmp_path, base="s1.yaml", arms=[{"name": "x"}], seeds=[1], report={"baseline": "y"})
    assert main(["sweep", str(sweep), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip().endswith("report.baseline: 'y' is not an arm (arms: x)")
    sweep = _sweep(tmp_path, base="s1.yaml", arms=[{"name": "x"}], seeds=[1, 2])
    assert main(["sweep", str(sweep)]) == 2
    assert "output_dir: not set and no --out given" in capsys.readouterr().err
    assert main(["sweep", str(sweep), "--out", str(tmp_path / "o"), "--plan"]) == 0
    assert capsys.readouterr().out.splitlines()[0].split()[:4] == ["new", "x", "seed", "1"]
    assert main(["sweep", "report", str(tmp_path / "o")]) == 2
    assert "not a sweep folder" in capsys.readouterr().err


# Changing these changes the public surface of sweeps: do it deliberately (and in the README).
FROZEN_SWEEP_KEYS = ["name", "workdir", "model_from", "overrides_from", "output_dir", "base", "overrides", "axes", "arms", "seeds",
                     "seed_keys", "seed_overrides", "train_command", "evals", "report", "base[].stage", "base[].recipe",
                     "base[].overrides", "arms[].name", "arms[].overrides", "evals[].name", "evals[].args",
                     "report.baseline", "report.metrics", "report.higher_is_better", "report.confidence"]
FROZEN_OPTIONS = ["--out", "--workdir", "--plan", "--reuse-from", "--baseline", "--metric", "--size", "--synth-threads", "--executor",
                  "--max-retries", "--cpus-per-task", "--gpus-per-task", "--ray-address", "--local-cpus", "--slurm-partition", "--slurm-time-min",
                  "--slurm-option"]


def test_sweep_surface_is_frozen():
    from cpt.sweep import spec as s

    keys = [*s.TOP_KEYS, *(f"base[].{k}" for k in s.STAGE_KEYS), *(f"arms[].{k}" for k in s.ARM_KEYS),
            *(f"evals[].{k}" for k in s.EVAL_KEYS), *(f"report.{k}" for k in s.REPORT_KEYS)]
    assert keys == FROZEN_SWEEP_KEYS
    sub = build_parser()._subparsers._group_actions[0].choices["sweep"]
    options = [a.option_strings[-1] for a in sub._actions if a.option_strings and a.dest != "help"]
    assert options == FROZEN_OPTIONS
    assert [a.dest for a in sub._actions if not a.option_strings] == ["target", "sweep_dir"]


def test_a_run_and_a_command_import_only_what_they_use():
    """Every run of a sweep starts a worker and `cpt` processes: each imports only its own part
    (the other commands' modules, the planner, YAML and the launch driver stay out)."""
    import subprocess
    import sys

    from cpt.cli import COMMANDS, command_of

    code = ("import sys, cpt.cli, cpt.launch.worker, cpt.sweep.runner, cpt.sweep.collect\n"
            "cpt.cli.build_parser(cpt.cli.command_of(['sweep', 'x.yaml', '--plan']))\n"
            "print(' '.join(sorted(sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    others = {module for name, (module, _) in COMMANDS.items() if name != "sweep"}
    assert "cpt.commands.sweep" in loaded and not loaded & others
    assert not loaded & {"cpt.sweep.plan", "cpt.sweep.driver", "yaml", "cpt.launch.run", "cpt.launch.executors",
                         "numpy", "matplotlib"}
    assert command_of(["--help"]) is None and command_of(["nope", "x"]) is None and command_of(["eval", "ppl"]) == "eval"


def test_parse_sweep_single_recipe_base(tmp_path, stages):
    spec = parse_sweep({"base": "s1.yaml", "arms": [{"name": "x"}], "seeds": 5}, tmp_path / "f.yaml", ["cpt"])
    assert [s.stage for s in spec.stages] == ["stage1"] and spec.seeds == [5] and spec.train_command == ["cpt"]
    assert spec.report.baseline is None and spec.seed_keys == ["training.seed"]


SWEEPS = sorted(p for p in (Path(__file__).resolve().parents[1] / "sweeps").rglob("*.yaml") if p.name != "findings.yaml")
PROXY_RECIPE = Path(__file__).resolve().parents[1] / "recipes/proxy/bilingual.yaml"
PROXY_SWEEPS = Path(__file__).resolve().parents[1] / "sweeps/llama3_synE_proxy"


def shipped(path: Path, tmp_path: Path, model: dict | None = None, size: str = "tiny"):
    """A shipped sweep in a stand-in workdir whose import's model.yaml has `model` (default: the tiny
    proxy's section of recipes/proxy/bilingual.yaml) and whose recipe_overrides.yaml is the size's, as
    `cpt sweep prepare` leaves it."""
    import dataclasses

    from cpt.sweep.prepare import SETTINGS, write_recipe_overrides

    spec = load_sweep(path, DEFAULT_TRAIN_COMMAND)
    workdir = tmp_path / "workdir"
    if spec.model_from:
        model = model or yaml.safe_load(PROXY_RECIPE.read_text())["model"]
        (workdir / spec.model_from).mkdir(parents=True, exist_ok=True)
        (workdir / spec.model_from / "model.yaml").write_text(yaml.safe_dump({"model": model}))
    if spec.overrides_from:
        write_recipe_overrides(workdir, SETTINGS[size])
    return dataclasses.replace(spec, workdir=workdir)


@pytest.mark.parametrize("path", [p for p in SWEEPS if load_sweep(p, DEFAULT_TRAIN_COMMAND).model_from],
                         ids=lambda p: p.name)
def test_a_sweep_on_an_import_trains_with_the_prepared_sizes_overrides(path, tmp_path):
    """One sweep file fits either size: the model from the import, the learning rates from the folder."""
    from cpt.sweep.prepare import SETTINGS

    assert load_sweep(path, DEFAULT_TRAIN_COMMAND).overrides_from == "recipe_overrides.yaml"
    gpu = SETTINGS["gpu"].recipe_overrides
    assert gpu and SETTINGS["tiny"].recipe_overrides == {}
    tiny_runs = plan_runs(shipped(path, tmp_path / "tiny"), tmp_path / "out_tiny")
    gpu_runs = plan_runs(shipped(path, tmp_path / "gpu", size="gpu"), tmp_path / "out_gpu")
    def rest(recipe: dict) -> dict:  # all but the size's keys and the run's folders
        recipe = copy.deepcopy(recipe)
        for key in [*gpu, "training.output_dir", "training.load", "data.cache_dir"]:
            section, name = key.split(".")
            recipe.get(section, {}).pop(name, None)
        return recipe

    for tiny_run, gpu_run in zip(tiny_runs, gpu_runs):
        for (_, tiny), (_, big) in zip(tiny_run.stages, gpu_run.stages):
            for key, value in gpu.items():
                section, name = key.split(".")
                assert big[section][name] == value and tiny[section][name] != value, key
            assert rest(tiny) == rest(big)


def test_overrides_from_is_read_from_the_workdir_and_kept_when_edited(tmp_path):
    from cpt.sweep.plan import workdir_overrides
    from cpt.sweep.prepare import SETTINGS, write_recipe_overrides

    spec = shipped(PROXY_SWEEPS / "controllers.yaml", tmp_path)
    assert workdir_overrides(spec) == {}
    path = spec.workdir / "recipe_overrides.yaml"
    path.write_text("schedule.lr_max: 2.0e-4\n")
    assert not write_recipe_overrides(spec.workdir, SETTINGS["gpu"])  # a user's edit is kept
    assert workdir_overrides(spec) == {"schedule.lr_max": 2.0e-4}
    assert all(r["schedule"]["lr_max"] == 2.0e-4 for run in plan_runs(spec, tmp_path / "out") for _, r in run.stages)
    path.write_text("- schedule.lr_max\n")
    with pytest.raises(SweepError, match=r"recipe_overrides.yaml: expected a mapping of recipe keys"):
        workdir_overrides(spec)
    path.unlink()
    with pytest.raises(SweepError, match=r"overrides_from: .*recipe_overrides.yaml does not exist; build the "
                                         r"workdir first"):
        plan_runs(spec, tmp_path / "out")


def test_model_from_sets_every_stage_model_and_is_required(tmp_path):
    path = Path(__file__).resolve().parents[1] / "sweeps/llama3_synE_proxy/disciplines.yaml"
    smollm2 = {**yaml.safe_load(PROXY_RECIPE.read_text())["model"], "num_layers": 30, "hidden_size": 576,
               "vocab_size": 49152}
    runs = plan_runs(shipped(path, tmp_path, smollm2), tmp_path / "out")
    assert all(recipe["model"] == smollm2 for run in runs for _, recipe in run.stages)
    import dataclasses

    bare = dataclasses.replace(load_sweep(path, DEFAULT_TRAIN_COMMAND), workdir=tmp_path / "nowhere")
    with pytest.raises(SweepError, match=r"model_from: .*nowhere/models/base_mcore/model.yaml does not exist.*"
                                         r"nowhere --size tiny`"):
        plan_runs(bare, tmp_path / "out")
    (tmp_path / "nowhere").mkdir()  # a folder being prepared at --size gpu: the hint keeps its size
    (tmp_path / "nowhere" / "prepare.json").write_text(json.dumps({"size": "gpu"}))
    with pytest.raises(SweepError, match=r"nowhere --size gpu`, or pass --workdir"):
        plan_runs(bare, tmp_path / "out")


@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_shipped_sweeps_plan_valid_recipes(path, tmp_path):
    spec = shipped(path, tmp_path)
    assert len(spec.seeds) >= 3 and spec.report.baseline is not None
    runs = plan_runs(spec, tmp_path)  # every run's stage recipes pass the recipe schema
    assert len(runs) == len(spec.arms) * len(spec.seeds)
    assert len({r.fingerprint for r in runs}) == len(runs)
    assert f"sweeps/llama3_synE_proxy/{path.name}" in (path.parent / "README.md").read_text()


def test_curriculum_arms_differ_only_in_the_chinese_order(tmp_path):
    spec = shipped(Path(__file__).resolve().parents[1] / "sweeps/llama3_synE_proxy/curriculum_zh.yaml", tmp_path)
    runs = {(r.arm, r.seed): r.stages[0][1] for r in plan_runs(spec, tmp_path)}
    for order, arm in (("ppl_asc", "lh"), ("ppl_desc", "hl"), ("shuffle", "shuffle")):
        streams = runs[(arm, 2)]["data"]["streams"]
        assert [s.get("order", "shuffle") for s in streams] == [order] * 4 + ["shuffle"] * (len(streams) - 4)
        assert [s["name"] for s in streams[:4]] == ["zh_law_politics", "zh_economics", "zh_humanities", "zh_general"]
        assert all(s["seed"] == 2 for s in streams) and runs[(arm, 2)]["training"]["seed"] == 2
    strip = lambda r: {**r, "data": {**r["data"], "streams": [{k: v for k, v in s.items() if k != "order"}
                                                              for s in r["data"]["streams"]]},
                       "training": {k: v for k, v in r["training"].items() if k != "output_dir"}}
    assert strip(runs[("lh", 1)]) == strip(runs[("hl", 1)]) == strip(runs[("shuffle", 1)])


def test_curriculum_pass_arms_read_one_sample_per_seed_once_in_three_orders(tmp_path):
    """Within a seed every arm has the same recipe but the order; seeds read disjoint doc_hash bands."""
    import re

    spec = shipped(Path(__file__).resolve().parents[1] / "sweeps/llama3_synE_proxy/curriculum_zh_pass.yaml", tmp_path)
    runs = {(r.arm, r.seed): r.stages[0][1] for r in plan_runs(spec, tmp_path)}
    strip = lambda r: {**r, "data": {**r["data"], "streams": [{k: v for k, v in s.items() if k != "order"}
                                                              for s in r["data"]["streams"]]},
                       "training": {k: v for k, v in r["training"].items() if k != "output_dir"}}
    bands = []
    for seed in spec.seeds:
        assert strip(runs[("lh", seed)]) == strip(runs[("hl", seed)]) == strip(runs[("shuffle", seed)])
        assert [runs[(a, seed)]["data"]["streams"][0]["order"] for a in ("lh", "hl", "shuffle")] == \
            ["ppl_asc", "ppl_desc", "shuffle"]
        recipe = runs[("lh", seed)]
        assert recipe["hooks"] == [] and [s["weight"] for s in recipe["data"]["streams"]] == [1, 0]
        # one pass over the sample whatever the tokenizer (cpt.train.budget), the stable phase the rest of it
        assert recipe["training"]["train_passes"] == {"zh": 1} and recipe["training"]["train_tokens"] is None
        assert recipe["schedule"]["stable_tokens"] is None
        bounds = [float(x) for x in re.findall(r"[0-9.]+", recipe["data"]["streams"][0]["filter"])]
        bands.append((0.0, *bounds) if len(bounds) == 1 else tuple(bounds))
    assert all(a[1] <= b[0] for a, b in zip(bands, bands[1:]))  # disjoint samples


def test_proxy_synthetic_recipe_is_bilingual_plus_the_synthetic_stream():
    bilingual = yaml.safe_load(PROXY_RECIPE.read_text())
    synthetic = yaml.safe_load((PROXY_RECIPE.parent / "synthetic.yaml").read_text())
    extra = synthetic["data"]["streams"].pop()
    assert extra == {"name": "synthetic", "prefixes": ["data/synthetic"], "weight": 0, "valid_holdout": 0.5}
    assert synthetic == bilingual


def test_prepare_refuses_a_folder_of_another_size(tmp_path, capsys):
    (tmp_path / "prepare.json").write_text(json.dumps({"size": "tiny"}))
    assert main(["sweep", "prepare", str(tmp_path), "--size", "gpu"]) == 2
    assert "was prepared at --size tiny" in capsys.readouterr().err
    assert main(["sweep", "prepare"]) == 2
    assert "needs the folder to build" in capsys.readouterr().err


def test_prepare_steps_name_every_output_and_read_the_base_models_tokenizer():
    from cpt.sweep.prepare import BASE_HF, SETTINGS, build_prepare_steps

    steps = build_prepare_steps(SETTINGS["tiny"], threads=1)
    names = [s.name for s in steps]
    assert names.index("convert") < names.index("synth-science")  # the sweeps without synthetic data start earlier
    assert all(s.outputs for s in steps)
    for s in steps:
        if s.cli == "preprocess":
            assert s.argv[s.argv.index("--tokenizer-model") + 1] == BASE_HF
        if s.cli == "preprocess" and "synthetic" in s.name:
            assert "--corpus-root" in s.argv and "question,answer" in s.argv[s.argv.index("--keep-fields") + 1]
    assert {"synth-science-c30", "synth-code-c50", "preprocess-synthetic-c50"} <= set(names)
    # the corrupted sets must select the very snippets of the clean one: their journals are its copy
    by_name = {s.name: s.argv for s in steps}

    split_flags = ("--valid-holdout", "--valid-holdout-seed", "--output-corpus-root")

    def selection(argv):
        dropped = ("--output", "--corrupt-rate", *split_flags)
        return [a for i, a in enumerate(argv) if argv[i - 1] not in dropped and a not in dropped]

    assert "--max-per-discipline" in by_name["synth-science"]
    assert by_name["synth-code"][by_name["synth-code"].index("--threads") + 1] == "1"  # --synth-threads
    assert selection(by_name["synth-science"]) == selection(by_name["synth-science-c30"]) \
        == selection(by_name["synth-science-c50"])


def test_corrupted_synthetic_sets_hold_out_the_recipes_validation_pairs():
    """The split error injection spares is the one training applies: the synthetic stream's
    valid_holdout and the recipe's valid_holdout_seed, over the ids `cpt preprocess` gives the pairs."""
    from cpt.sweep.prepare import SETTINGS, build_prepare_steps

    recipe = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes/proxy/synthetic.yaml").read_text())
    stream = next(s for s in recipe["data"]["streams"] if s["name"] == "synthetic")
    by_name = {s.name: s.argv for s in build_prepare_steps(SETTINGS["tiny"], threads=1)}
    for tag in ("c30", "c50"):
        for kind in ("science", "code"):
            argv = by_name[f"synth-{kind}-{tag}"]
            assert float(argv[argv.index("--valid-holdout") + 1]) == stream["valid_holdout"]
            assert int(argv[argv.index("--valid-holdout-seed") + 1]) == recipe["data"]["valid_holdout_seed"]
            pre = by_name[f"preprocess-synthetic-{tag}"]
            assert argv[argv.index("--output-corpus-root") + 1] == pre[pre.index("--corpus-root") + 1]
