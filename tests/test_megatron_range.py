"""The megatron-core ranges are declared once in code (megatron_ext.compat.MEGATRON_CORE_RANGES, one
per Python version) and pyproject.toml declares the same; the installed release is in this Python's
range, and the private APIs our fixes adjust are still there (a newer release that moved them fails
here, not in a cluster run)."""
from __future__ import annotations

import tomllib
import warnings
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement

from megatron_ext import compat

REPO = Path(__file__).resolve().parents[1]


def test_pyproject_declares_the_tested_ranges():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = [Requirement(d) for d in deps if Requirement(d).name == "megatron-core"]
    declared = {(str(r.marker), r.specifier) for r in reqs}
    expected = {(str(Marker(m)), Requirement("megatron-core" + s).specifier) for m, s in compat.MEGATRON_CORE_RANGES}
    assert declared == expected, [str(r) for r in reqs]


def test_the_ranges_cover_every_python_once():
    for python in ("3.10", "3.11", "3.12", "3.13"):
        env = {"python_version": python, "python_full_version": python + ".0"}
        assert sum(Marker(m).evaluate(env) for m, _ in compat.MEGATRON_CORE_RANGES) == 1, python


def test_installed_release_is_in_range_and_others_warn(monkeypatch):
    assert compat.in_tested_range()
    assert compat.in_tested_range("0.16.1") and not compat.in_tested_range("0.15.3")
    assert not compat.in_tested_range("0.20.0")
    monkeypatch.setattr(compat, "megatron_core_version", lambda: "0.20.0")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compat.warn_if_untested("megatron_ext")
    assert len(caught) == 1 and f"{compat.tested_range()} on this Python; found 0.20.0" in str(caught[0].message)


def test_the_private_apis_our_fixes_adjust_exist():
    from megatron.core.models.common.embeddings import rope_utils
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer
    import megatron.core.transformer.attention as attention

    assert hasattr(DistributedOptimizer, "_set_main_param_and_optimizer_states")
    assert hasattr(DistributedOptimizer, "load_parameter_state_from_fully_reshardable")
    assert hasattr(DistributedOptimizer, "_init_optimizer_states_with_dummy_values")
    assert callable(getattr(rope_utils, "apply_rotary_pos_emb", None))
    assert hasattr(attention, "apply_rotary_pos_emb")
    from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue

    assert hasattr(AsyncCallsQueue, "maybe_finalize_async_calls")
    # the engine's checkpoint forms and its spread saves (megatron_ext.engine: save, _save_strategy)
    assert hasattr(DistributedOptimizer, "load_parameter_state_from_dp_reshardable")
    import inspect

    from megatron.core.dist_checkpointing.serialization import get_default_save_sharded_strategy
    from megatron.core.dist_checkpointing.strategies.fully_parallel import FullyParallelSaveStrategyWrapper

    assert callable(get_default_save_sharded_strategy)
    params = inspect.signature(FullyParallelSaveStrategyWrapper).parameters
    assert {"strategy", "parallelization_group", "do_cache_distribution"} <= set(params)


def test_saved_param_groups_pair_with_the_current_ones_by_keys_we_handle():
    # megatron pairs saved and current optimizer param groups by these keys; any beyond 0.16-0.18's
    # must be one compat.carry_schedule_into aligns, or one our engine never sets per group.
    from megatron.core.optimizer.optimizer import param_group_identifier_keys

    structural = {"wd_mult", "lr_mult", "is_expert_parallel", "is_decoupled_lr"}
    assert set(param_group_identifier_keys) - structural <= set(compat._SCHEDULE_KEYS) | {"optimizer"}


def test_a_new_stage_learning_rate_does_not_break_the_pairing():
    class Optimizer:
        param_groups = [{"max_lr": 6e-3, "min_lr": 3e-4, "wd_mult": 0.0},
                        {"max_lr": 6e-3, "min_lr": 3e-4, "wd_mult": 1.0}]

    saved = {"optimizer": {"param_groups": [{"max_lr": 3e-3, "min_lr": 1e-4, "wd_mult": 0.0, "params": [0]},
                                            {"max_lr": 3e-3, "min_lr": 1e-4, "wd_mult": 1.0, "params": [1]}]}}
    compat.carry_schedule_into(saved, Optimizer())
    groups = saved["optimizer"]["param_groups"]
    from megatron.core.optimizer.optimizer import param_group_identifier_keys

    if "max_lr" in param_group_identifier_keys:
        assert [(g["max_lr"], g["min_lr"], g["wd_mult"]) for g in groups] == [(6e-3, 3e-4, 0.0), (6e-3, 3e-4, 1.0)]
    else:  # 0.16-0.18 pair by wd_mult/lr_mult only: the saved groups are left as they were
        assert [g["max_lr"] for g in groups] == [3e-3, 3e-3]
    # per-group overrides (several values in a group field) are left to megatron's own pairing
    saved["optimizer"]["param_groups"][0]["max_lr"] = 1e-3
    compat.carry_schedule_into(saved, Optimizer())
    assert saved["optimizer"]["param_groups"][0]["max_lr"] == 1e-3
