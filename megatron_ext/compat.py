"""Fixes for megatron-core behaviour that differs by version or by optimizer backend.

Applied by `megatron_ext.engine` at import; each fix checks that the code it adjusts exists, so a
newer megatron-core that no longer needs it is left alone.
"""
from __future__ import annotations

import functools


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


def apply() -> None:
    _fix_torch_adam_step_on_reshardable_load()
