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


def summary() -> dict[str, bool]:
    """What is available, for the run log."""
    return {
        "transformer_engine": has_transformer_engine(),
        "apex": has_apex(),
        "flash_attn": has_flash_attn(),
    }
