"""Sampling parameters from a recipe's `synth.sampling` block, then command-line overrides.

The recipe schema (cpt/config.py) has no `synth` section yet, so the block is read here directly and
validated with the same strictness: an unknown key is an error naming it.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from cpt.synth.generators.base import SamplingParams

_KEYS = ("max_new_tokens", "temperature", "top_p")


def load_sampling(recipe: Path | None, **overrides: float | int | None) -> SamplingParams:
    """`SamplingParams` from `recipe` (if given) with non-None `overrides` applied on top."""
    values: dict = {}
    if recipe is not None:
        try:
            data = yaml.safe_load(Path(recipe).read_text()) or {}
        except FileNotFoundError:
            raise ValueError(f"{recipe}: recipe file not found") from None
        block = ((data.get("synth") or {}) if isinstance(data, dict) else {}).get("sampling") or {}
        if not isinstance(block, dict):
            raise ValueError(f"{recipe}: synth.sampling must be a mapping")
        for key, value in block.items():
            if key not in _KEYS:
                raise ValueError(f"{recipe}: synth.sampling.{key} is not a sampling setting "
                                 f"(known: {', '.join(_KEYS)})")
            values[key] = value
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return SamplingParams(**values)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{recipe or 'command line'}: synth.sampling: {e}") from None
