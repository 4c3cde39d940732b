"""Fixes for megatron-core behaviour that differs by version or by optimizer backend.

Applied by `megatron_ext.engine` at import; each fix checks that the code it adjusts exists, so a
newer megatron-core that no longer needs it is left alone.
"""
from __future__ import annotations

import functools
import warnings
from typing import Any

import torch

# The megatron-core releases the engine tests have passed against, per Python version (environment
# marker, specifier); pyproject.toml declares exactly these requirements (tests/test_megatron_range.py
# checks both). megatron-core 0.17 and later require Python 3.12, so on 3.11 the range stays at 0.16;
# on 3.12 the tests ran on CPU/gloo against every release up to the bound, and on 3.13 against the
# newest (not yet on a GPU):
# tools/megatron_range.py reruns them, and says when a newer release lets the bound rise.
# cpu.py and the fixes below adjust private APIs of exactly these releases.
MEGATRON_CORE_RANGES: tuple[tuple[str, str], ...] = (
    ("python_version < '3.12'", ">=0.16.1,<0.17"),
    ("python_version >= '3.12'", ">=0.16.1,<0.20"),
)


def tested_range(python: str | None = None) -> str:
    """The specifier of MEGATRON_CORE_RANGES whose marker holds for `python` ("3.12"), by default
    this interpreter (tools/gpu_kit.py and tools/megatron_range.py ask for another node's Python)."""
    from packaging.markers import Marker

    env = None if python is None else {"python_version": python, "python_full_version": f"{python}.0"}
    for marker, specifier in MEGATRON_CORE_RANGES:
        if Marker(marker).evaluate(env):
            return specifier
    raise RuntimeError(f"megatron_ext.compat.MEGATRON_CORE_RANGES names no range for Python {python or 'here'}")


def megatron_core_version() -> str:
    from importlib.metadata import version

    return version("megatron-core")


def in_tested_range(found: str | None = None) -> bool:
    from packaging.specifiers import SpecifierSet

    return SpecifierSet(tested_range()).contains(found or megatron_core_version(), prereleases=True)


def warn_if_untested(what: str) -> None:
    """One warning naming the range, when the installed megatron-core is outside it."""
    found = megatron_core_version()
    if not in_tested_range(found):
        warnings.warn(f"{what} was tested with megatron-core {tested_range()} on this Python; found {found}. "
                      f"Run the engine tests on it before trusting a run.", stacklevel=3)


def _fix_torch_adam_step_on_reshardable_load() -> None:
    # DistributedOptimizer.load_parameter_state_from_fully_reshardable (0.16) hands
    # _set_main_param_and_optimizer_states the saved tensors WITHOUT torch AdamW's per-parameter
    # "step" (megatron restores it from param_groups beforehand), yet that method copies every key
    # of the live state, so loading fails with KeyError: 'step' whenever neither Apex nor
    # TransformerEngine provides a fused Adam (always on CPU). The dp_reshardable load hands it a
    # "step" (the local placeholder, not the saved value) and a "padding" flag. Copy every live
    # state but "step" from what was given: a missing state still fails, extra keys are ignored.
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    original = getattr(DistributedOptimizer, "_set_main_param_and_optimizer_states", None)
    if original is None or getattr(original, "_cpt_fixed", False):
        return

    @functools.wraps(original)
    def set_states(self, model_param, tensors):
        if self.config.use_precision_aware_optimizer_no_fp8_or_ds_fp8:
            return original(self, model_param, tensors)
        group_index, group_order = self.model_param_group_index_map[model_param]
        main_param = self.optimizer.param_groups[group_index]["params"][group_order]
        live = {"param": main_param, **self.optimizer.state[main_param]}
        for key, target in live.items():
            if key != "step":
                target.copy_(tensors[key])

    set_states._cpt_fixed = True
    DistributedOptimizer._set_main_param_and_optimizer_states = set_states


def unshare_adam_steps(optimizer) -> None:
    """Give every parameter its own AdamW `step` tensor after a checkpoint load.

    DistributedOptimizer.load_state_dict (0.16) restores torch AdamW's per-parameter `step` from the
    common value in param_groups by assigning ONE tensor to every parameter; the foreach AdamW then
    increments that shared tensor once per parameter per step, and the bias correction after a
    resume goes wrong (the resumed run drifts from the uninterrupted one at the second step)."""
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = getattr(opt, "optimizer", None)
        if inner is None:
            continue
        for state in inner.state.values():
            step = state.get("step")
            if isinstance(step, torch.Tensor):
                state["step"] = step.detach().clone()


def prefer_foreach_adam(optimizer) -> None:
    """Let torch's Adam/AdamW (megatron's optimizer when neither Apex nor TransformerEngine is
    installed: always on CPU) take its multi-tensor path.

    torch picks that path by itself only for CUDA tensors; on the CPU it leaves `foreach` unset and
    runs a Python loop of per-tensor ops with two temporaries per parameter. The multi-tensor path
    computes the same update with the same scalar arithmetic (bit-identical here), ~1/3 faster.
    Call after building the optimizer and after loading its state (which restores param_groups)."""
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = getattr(opt, "optimizer", None)
        if not isinstance(inner, (torch.optim.Adam, torch.optim.AdamW)):
            continue
        for group in inner.param_groups:
            if group.get("foreach") is None and not group.get("fused"):
                group["foreach"] = True


# Per-group schedule fields megatron's own OptimizerParamScheduler reads. Our engine sets each
# group's lr and weight_decay itself every step from the recipe's schedule, so a saved value of
# these is only a record of the run that wrote the checkpoint.
_SCHEDULE_KEYS = ("max_lr", "min_lr", "start_wd", "end_wd")


def _saved_param_group_lists(state: Any) -> list[list[dict]]:
    """The `param_groups` lists inside an optimizer state dict as megatron's optimizers load it:
    DistributedOptimizer / Float16Optimizer ({"optimizer": {...}}), FP32Optimizer (torch's own
    form), ChainedOptimizer of several (a list or an index-keyed dict of those)."""
    if isinstance(state, (list, tuple)):
        return [g for item in state for g in _saved_param_group_lists(item)]
    if not isinstance(state, dict):
        return []
    if isinstance(state.get("param_groups"), list):
        return [state["param_groups"]]
    for key in ("optimizer", "optimizer_state_dict"):
        if isinstance(state.get(key), dict) and isinstance(state[key].get("param_groups"), list):
            return [state[key]["param_groups"]]
    return [g for value in state.values() for g in _saved_param_group_lists(value)]


def carry_schedule_into(saved_state: Any, optimizer) -> None:
    """Give the saved param groups the current run's schedule fields before `load_state_dict`.

    megatron-core >= 0.19 pairs saved and current param groups by a tuple that includes the
    groups' `max_lr`/`min_lr` (`param_group_identifier_keys`); 0.16-0.18 paired them by
    wd_mult/lr_mult only (this is then a no-op). A stage that continues from another with a new
    learning rate (the point of continual pre-training) then fails to load with a KeyError on that
    tuple. Where every current group
    holds one value of a field and every saved group one value too (no per-group lr overrides,
    as our engine builds them), the saved value is replaced by the current one; anything else is
    left to megatron's own pairing."""
    try:
        from megatron.core.optimizer.optimizer import param_group_identifier_keys
    except ImportError:
        return
    keys = [k for k in _SCHEDULE_KEYS if k in param_group_identifier_keys]
    saved = [g for groups in _saved_param_group_lists(saved_state) for g in groups]
    current = list(optimizer.param_groups)
    for key in keys:
        now = {repr(g.get(key)) for g in current}
        before = {repr(g.get(key)) for g in saved}
        if saved and len(now) == 1 and len(before) == 1:
            for group in saved:
                group[key] = current[0].get(key)


def dist_save_options() -> dict[str, Any]:
    """Extra keyword arguments for `dist_checkpointing.save`.

    From 0.17 on, `save(async_sharded_save=True)` uses NVIDIA Resiliency Extension's async writer
    by default (`async_strategy="nvrx"`) and fails where that package is absent; its requests also
    belong to NVRx's own queue, not to megatron's `AsyncCallsQueue` that the engine finalizes.
    megatron's own writer ("mcore", the only one of 0.16) keeps the engine's save path the same
    on every release of the range."""
    import inspect

    from megatron.core import dist_checkpointing

    if "async_strategy" in inspect.signature(dist_checkpointing.save).parameters:
        return {"async_strategy": "mcore"}
    return {}


def apply() -> None:
    warn_if_untested("megatron_ext")
    _fix_torch_adam_step_on_reshardable_load()
