"""Run-time detection of the optional GPU extras (TransformerEngine, Apex, flash-attn).

None of them is required; each is looked up without importing it where a lookup is enough, and a
broken install (e.g. the bare `transformer-engine` meta-package on a CPU machine) counts as absent.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util


@functools.cache
def _importable(module: str) -> bool:
    if importlib.util.find_spec(module.split(".")[0]) is None:
        return False
    try:
        importlib.import_module(module)
    except Exception:  # a present but broken install is treated as absent
        return False
    return True


def has_transformer_engine() -> bool:
    return _importable("transformer_engine.pytorch")


def has_apex() -> bool:
    return _importable("apex.optimizers")


def has_flash_attn() -> bool:
    return _importable("flash_attn")


def has_apex_wgrad_fusion() -> bool:
    """Apex's CUDA extension behind megatron's gradient_accumulation_fusion on the local spec."""
    return _importable("fused_weight_gradient_mlp_cuda")


def version_of(distribution: str) -> str | None:
    """The installed version of a distribution, or None (read from metadata, nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def summary() -> dict[str, object]:
    """What is available, for the run log: False when absent (or broken), else the version."""
    te = has_transformer_engine() and (version_of("transformer-engine") or version_of("transformer_engine") or True)
    return {
        "transformer_engine": te,
        "apex": has_apex(),
        "flash_attn": has_flash_attn() and (version_of("flash-attn") or version_of("flash_attn") or True),
    }
