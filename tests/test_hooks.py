"""The hook API without an engine: building hooks from recipe specs (import path, entry point,
errors), merging updates, the runner's call order and state, and the held-out split of streams."""
from __future__ import annotations

import numpy as np
import pytest

from cpt.config import HookSpec
from cpt.train.hook_runner import HookRunner
from cpt.train.hooks import DataHook, EvalMetrics, HookContext, MixtureUpdate, build_hook, merge_update


def context(weights: dict[str, float], log: list | None = None) -> HookContext:
    return HookContext(
        stream_names=tuple(weights), weights=lambda: dict(weights), samples=lambda: {k: 0 for k in weights},
        exhausted=lambda: frozenset(), progress=lambda: (3, 300),
        log=lambda kind, figures, line=None: (log if log is not None else []).append((kind, figures)),
        total_steps=10, tokens_per_step=100, is_logging_rank=True,
    )


class Fixed(DataHook):
    def __init__(self, weights: dict[str, float], seen: list) -> None:
        self.weights, self.seen = weights, seen

    def on_eval(self, ctx, step, eval_metrics):
        self.seen.append(ctx.weights())
        return MixtureUpdate(self.weights, reason="fixed")


def test_merge_update_keeps_unnamed_shares_and_normalises():
    merged = merge_update({"a": 0.5, "b": 0.3, "c": 0.2}, MixtureUpdate({"a": 0.3}), "hook x")
    assert merged == pytest.approx({"a": 0.3 / 0.8, "b": 0.3 / 0.8, "c": 0.2 / 0.8})
    with pytest.raises(ValueError, match=r"hook x: MixtureUpdate names unknown streams \['d'\]"):
        merge_update({"a": 1.0}, MixtureUpdate({"d": 1.0}), "hook x")
    with pytest.raises(ValueError, match="must be finite and >= 0"):
        merge_update({"a": 0.5, "b": 0.5}, MixtureUpdate({"a": float("nan")}), "hook x")
    with pytest.raises(ValueError, match="every stream at weight 0"):
        merge_update({"a": 1.0}, MixtureUpdate({"a": 0.0}), "hook x")


def test_build_hook_by_import_path_and_its_errors():
    hook = build_hook("thirdparty_hooks:RecordingHook", {"record": "/tmp/x"}, "hooks[0]")
    assert hook.calls == 0
    with pytest.raises(ValueError, match=r"hooks\[0\].options: .*unexpected keyword argument 'recrd'"):
        build_hook("thirdparty_hooks:RecordingHook", {"record": "/tmp/x", "recrd": 1}, "hooks[0]")
    with pytest.raises(ValueError, match="cannot import 'no_such_module'"):
        build_hook("no_such_module:Hook", {}, "hooks[0]")
    with pytest.raises(ValueError, match="has no attribute 'Nope'"):
        build_hook("thirdparty_hooks:Nope", {}, "hooks[0]")
    with pytest.raises(ValueError, match="neither 'package.module:Class' nor a 'cpt.data_hooks' entry point"):
        build_hook("not_an_entry_point", {}, "hooks[0]")
    with pytest.raises(ValueError, match="implements none of on_train_start, on_step_end, on_eval"):
        build_hook("collections:OrderedDict", {}, "hooks[0]")


def test_runner_merges_in_recipe_order_and_each_hook_sees_the_previous_update():
    seen: list = []
    ctx = context({"a": 0.5, "b": 0.5})
    runner = HookRunner([("one", Fixed({"a": 0.8, "b": 0.2}, seen)), ("two", Fixed({"b": 0.6}, seen))], ctx,
                        broadcast=lambda x: x)
    weights = runner.eval(3, EvalMetrics(3, 300, 1.0, 2.7, {}))
    assert seen == [{"a": 0.5, "b": 0.5}, pytest.approx({"a": 0.8, "b": 0.2})]
    assert weights == pytest.approx({"a": 0.8 / 1.4, "b": 0.6 / 1.4})
    assert runner.updates == 1
    assert runner.step_end(3, {}) is None  # no hook implements on_step_end: nothing asked, no broadcast


def test_runner_takes_rank0_decision_and_checks_state():
    ctx = context({"a": 0.5, "b": 0.5})
    runner = HookRunner([("one", Fixed({"a": 0.9}, []))], ctx, broadcast=lambda x: {"a": 0.25, "b": 0.75})
    assert runner.eval(1, EvalMetrics(1, 100, None, None, {})) == {"a": 0.25, "b": 0.75}
    state = runner.state_dict()
    assert state == {"version": 1, "hooks": {"one": {}}}
    with pytest.raises(ValueError, match=r"ckpt: the checkpoint holds state for hooks \['other'\]"):
        runner.load_state_dict({"version": 1, "hooks": {"other": {}}}, "ckpt")


def test_recipe_hook_specs_are_validated():
    from cpt.config import RecipeError, recipe_from_dict

    base = {"model": dict(num_layers=1, hidden_size=8, ffn_hidden_size=8, num_attention_heads=1, vocab_size=10),
            "training": dict(train_tokens=10, seq_length=8, global_batch_size=1),
            "data": {"streams": [{"name": "a", "prefixes": ["p"], "weight": 1.0}]}}
    recipe = recipe_from_dict({**base, "hooks": [{"use": "x:Y", "options": {"alpha": 0.5}}]})
    assert recipe.hooks == [HookSpec(use="x:Y", options={"alpha": 0.5})]
    with pytest.raises(RecipeError, match=r"hooks\[0\].options: expected a mapping"):
        recipe_from_dict({**base, "hooks": [{"use": "x:Y", "options": [1]}]})
    with pytest.raises(RecipeError, match="hook names must be unique"):
        recipe_from_dict({**base, "hooks": [{"use": "x:Y"}, {"use": "x:Y"}]})
    with pytest.raises(RecipeError, match="hooks: data hooks change stream weights: they need data.streams"):
        recipe_from_dict({**base, "data": {"blend": [["p", 1.0]]}, "hooks": [{"use": "x:Y"}]})


def test_held_out_validation_streams_are_disjoint_from_training(tmp_path):
    from cpt.config import recipe_from_dict
    from cpt.train.stream_data import build_streams
    from train_fixtures import stream_recipe, write_lang_shards

    prefix = write_lang_shards(tmp_path / "lang")
    d = recipe_from_dict(stream_recipe(prefix, tmp_path / "run", data={"valid_holdout": 0.25})).data
    train = build_streams(d.streams, 64, "train", 0.25, 0)
    valid = build_streams(d.streams, 64, "valid", 0.25, 0)
    everything = build_streams(d.streams, 64)
    for t, v, a in zip(train, valid, everything):
        assert not set(t.rows) & set(v.rows)
        assert sorted(set(t.rows) | set(v.rows)) == sorted(a.rows)
        assert 0.1 < len(v.rows) / len(a.rows) < 0.4
        assert v.config.order == "shuffle"
    # the same split whatever else is in the recipe (seed only): built again, the same rows
    assert [list(v.rows) for v in valid] == [list(v.rows) for v in build_streams(d.streams, 64, "valid", 0.25, 0)]
    with pytest.raises(ValueError, match=r"stream 'en' has no held-out \(valid_holdout=1e-09; "
                                         r"data.streams\[0\].valid_holdout: 0 trains on all"):
        build_streams(d.streams, 64, "valid", 1e-9, 0)


def test_a_stream_with_valid_holdout_0_trains_on_all_and_is_not_validated(tmp_path):
    from cpt.config import recipe_from_dict
    from cpt.train.run import build_training_data
    from cpt.train.stream_data import build_streams
    from train_fixtures import stream_recipe, write_lang_shards

    prefix = write_lang_shards(tmp_path / "lang")
    rd = stream_recipe(prefix, tmp_path / "run", data={"valid_holdout": 0.25})
    rd["data"]["streams"][0]["valid_holdout"] = 0.0   # en: every document trains
    rd["data"]["streams"][1]["valid_holdout"] = 0.5   # zh: its own share
    recipe = recipe_from_dict(rd)
    data = build_training_data(recipe)
    try:
        assert list(data.valid_streams) == ["zh"]
        everything = {s.name: s for s in build_streams(recipe.data.streams, 64)}
        train = {s.name: s for s in data.train.streams}
        assert list(train["en"].rows) == list(everything["en"].rows)
        zh_valid = data.valid_streams["zh"].streams[0]
        assert not set(train["zh"].rows) & set(zh_valid.rows)
        assert sorted(set(train["zh"].rows) | set(zh_valid.rows)) == sorted(everything["zh"].rows)
        assert 0.3 < len(zh_valid.rows) / len(everything["zh"].rows) < 0.7
    finally:
        data.close()
    # per-stream validation is on as soon as one stream holds documents out
    rd["data"]["valid_holdout"] = 0.0
    assert list(build_training_data(recipe_from_dict(rd)).valid_streams) == ["zh"]
    with pytest.raises(Exception, match=r"data.streams\[1\].valid_holdout: must be in \[0, 1\) or null"):
        rd["data"]["streams"][1]["valid_holdout"] = 1.0
        recipe_from_dict(rd)


def test_shipped_hooks_resolve_from_a_source_checkout_and_equal_the_entry_points(monkeypatch):
    """A source checkout on PYTHONPATH has no installed entry points (no cpt metadata): cpt's own hooks
    still resolve by name, and pyproject.toml registers exactly the same names for installed copies."""
    import tomllib
    from pathlib import Path

    from cpt.train import hooks

    repo = Path(__file__).resolve().parents[1]
    declared = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["entry-points"]["cpt.data_hooks"]
    assert declared == hooks.SHIPPED_HOOKS
    monkeypatch.setattr(hooks, "entry_points", lambda group: [])  # what a checkout without metadata finds
    for name, target in hooks.SHIPPED_HOOKS.items():
        assert hooks._resolve(name, "hooks[0]").__name__ == target.rsplit(":", 1)[1]
    with pytest.raises(ValueError, match=r"\(installed: \['exp3', 'forgetting_guard', 'schedule', 'static', "
                                         r"'topic_ppl'\]\)"):
        hooks._resolve("not_a_hook", "hooks[0]")
