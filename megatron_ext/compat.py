"""Fixes for megatron-core behaviour that differs by version or by optimizer backend.

Applied by `megatron_ext.engine` at import; each fix checks that the code it adjusts exists, so a
newer megatron-core that no longer needs it is left alone.
"""
from __future__ import annotations

import functools
import warnings

import torch

# The megatron-core releases the engine tests have passed against (pyproject.toml declares the same
# range; tests/test_megatron_range.py checks both). cpu.py and the fixes below adjust private APIs
# of exactly these releases.
MEGATRON_CORE_RANGE = ">=0.16.1,<0.17"


def megatron_core_version() -> str:
    from importlib.metadata import version

    return version("megatron-core")


def in_tested_range(found: str | None = None) -> bool:
    from packaging.specifiers import SpecifierSet

    return SpecifierSet(MEGATRON_CORE_RANGE).contains(found or megatron_core_version(), prereleases=True)


def warn_if_untested(what: str) -> None:
    """One warning naming the range, when the installed megatron-core is outside it."""
    found = megatron_core_version()
    if not in_tested_range(found):
        warnings.warn(f"{what} was tested with megatron-core {MEGATRON_CORE_RANGE}; found {found}. "
                      f"Run the engine tests on it before trusting a run.", stacklevel=3)


def _fix_torch_adam_step_on_reshardable_load() -> None:
    # DistributedOptimizer.load_parameter_state_from_fully_reshardable (0.16) hands
    # _set_main_param_and_optimizer_states the saved tensors WITHOUT torch AdamW's per-parameter
    # "step" (megatron restores it from param_groups beforehand), yet that method copies every key
    # of the live state, so loading fails with KeyError: 'step' whenever neither Apex nor
    # TransformerEngine provides a fused Adam (always on CPU). Copy only what was given.
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
        for key, value in tensors.items():
            live[key].copy_(value)

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


def apply() -> None:
    warn_if_untested("megatron_ext")
    _fix_torch_adam_step_on_reshardable_load()
