"""The megatron-core range is declared once in code (megatron_ext.compat.MEGATRON_CORE_RANGE) and
pyproject.toml declares the same; the installed release is in it, and the private APIs our fixes
adjust are still there (a newer release that moved them fails here, not in a cluster run)."""
from __future__ import annotations

import tomllib
import warnings
from pathlib import Path

from packaging.requirements import Requirement

from megatron_ext import compat

REPO = Path(__file__).resolve().parents[1]


def test_pyproject_declares_the_tested_range():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = [Requirement(d) for d in deps if Requirement(d).name == "megatron-core"]
    assert len(reqs) == 1 and reqs[0].marker is None, [str(r) for r in reqs]
    assert reqs[0].specifier == Requirement("megatron-core" + compat.MEGATRON_CORE_RANGE).specifier


def test_installed_release_is_in_range_and_others_warn(monkeypatch):
    assert compat.in_tested_range()
    assert compat.in_tested_range("0.16.1") and not compat.in_tested_range("0.17.0")
    assert not compat.in_tested_range("0.15.3")
    monkeypatch.setattr(compat, "megatron_core_version", lambda: "0.17.0")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compat.warn_if_untested("megatron_ext")
    assert len(caught) == 1 and ">=0.16.1,<0.17; found 0.17.0" in str(caught[0].message)


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
