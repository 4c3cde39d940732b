"""Warmup-stable-decay (WSD) learning rate as a pure function of consumed tokens.

Tokens, not steps, define the phases, so a run that changes its global batch size or sequence
length mid-way (stage 1 → stage 2) keeps its place in the schedule, and resuming needs nothing but
the consumed-token count. Phases:

    [0, W)            linear from lr_init to lr_max            (warmup)
    [W, W+S)          lr_max                                    (stable)
    [W+S, W+S+D)      lr_max → lr_min, shape `decay_style`      (decay)
    [W+S+D, ∞)        lr_min (lr_max when decay_tokens is 0: the stable phase goes on)

Decay shapes, with progress p in [0, 1): linear `1-p`; cosine `(1+cos(πp))/2`; 1-sqrt `1-sqrt(p)`
(the WSD paper's choice); lr = lr_min + (lr_max − lr_min)·shape(p).
"""
from __future__ import annotations

import math

from cpt.config import ScheduleConfig


def _decay_shape(style: str, progress: float) -> float:
    if style == "linear":
        return 1.0 - progress
    if style == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if style == "1-sqrt":
        return 1.0 - math.sqrt(progress)
    raise ValueError(f"schedule.decay_style: unknown style {style!r}")


def wsd_lr(cfg: ScheduleConfig, tokens: int) -> float:
    """Learning rate after `tokens` consumed tokens."""
    if tokens < 0:
        raise ValueError(f"consumed tokens must be >= 0, got {tokens}")
    warm_end = cfg.warmup_tokens
    stable_end = warm_end + cfg.stable_tokens
    decay_end = stable_end + cfg.decay_tokens
    if tokens < warm_end:
        return cfg.lr_init + (cfg.lr_max - cfg.lr_init) * (tokens / warm_end)
    if tokens < stable_end:
        return cfg.lr_max
    if tokens < decay_end:
        progress = (tokens - stable_end) / cfg.decay_tokens
        return cfg.lr_min + (cfg.lr_max - cfg.lr_min) * _decay_shape(cfg.decay_style, progress)
    # No decay planned: the stable phase goes on (WSD's point: decay whenever you choose to stop).
    return cfg.lr_min if cfg.decay_tokens > 0 else cfg.lr_max


def phase(cfg: ScheduleConfig, tokens: int) -> str:
    """Name of the phase at `tokens` (for logs and reports)."""
    if tokens < cfg.warmup_tokens:
        return "warmup"
    if tokens < cfg.warmup_tokens + cfg.stable_tokens:
        return "stable"
    if tokens < cfg.warmup_tokens + cfg.stable_tokens + cfg.decay_tokens:
        return "decay"
    return "done" if cfg.decay_tokens > 0 else "stable"
