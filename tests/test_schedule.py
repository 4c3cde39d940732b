"""WSD learning rate at and around every phase boundary."""
from __future__ import annotations

import math

import pytest

from cpt.config import ScheduleConfig
from cpt.train.schedule import phase, wsd_lr

CFG = ScheduleConfig(lr_init=1e-7, lr_max=1e-5, lr_min=1e-6, warmup_tokens=1000, stable_tokens=2000,
                     decay_tokens=1000, decay_style="linear")


@pytest.mark.parametrize(
    "tokens, expected, name",
    [
        (0, 1e-7, "warmup"),
        (1, 1e-7 + (1e-5 - 1e-7) / 1000, "warmup"),
        (500, 1e-7 + (1e-5 - 1e-7) * 0.5, "warmup"),
        (999, 1e-7 + (1e-5 - 1e-7) * 0.999, "warmup"),
        (1000, 1e-5, "stable"),
        (2999, 1e-5, "stable"),
        (3000, 1e-5, "decay"),
        (3001, 1e-6 + 9e-6 * (1 - 1 / 1000), "decay"),
        (3500, 1e-6 + 9e-6 * 0.5, "decay"),
        (3999, 1e-6 + 9e-6 * (1 / 1000), "decay"),
        (4000, 1e-6, "done"),
        (10**12, 1e-6, "done"),
    ],
)
def test_linear_wsd_boundaries(tokens, expected, name):
    assert wsd_lr(CFG, tokens) == pytest.approx(expected, rel=1e-12, abs=1e-18)
    assert phase(CFG, tokens) == name


@pytest.mark.parametrize(
    "style, progress, shape",
    [("cosine", 0.5, 0.5), ("cosine", 0.25, (1 + math.cos(math.pi / 4)) / 2), ("1-sqrt", 0.25, 0.5),
     ("1-sqrt", 0.0, 1.0), ("linear", 0.75, 0.25)],
)
def test_decay_shapes(style, progress, shape):
    cfg = ScheduleConfig(lr_init=0.0, lr_max=1.0, lr_min=0.1, warmup_tokens=0, stable_tokens=0,
                         decay_tokens=1000, decay_style=style)
    assert wsd_lr(cfg, int(progress * 1000)) == pytest.approx(0.1 + 0.9 * shape)


def test_continuous_at_boundaries():
    for boundary in (1000, 3000, 4000):
        assert abs(wsd_lr(CFG, boundary) - wsd_lr(CFG, boundary - 1)) < 1e-8


def test_no_decay_means_stable_forever():
    cfg = ScheduleConfig(lr_init=0.0, lr_max=2.0, lr_min=1.0, warmup_tokens=10, stable_tokens=0, decay_tokens=0)
    assert wsd_lr(cfg, 5) == 1.0 and wsd_lr(cfg, 10) == 2.0 and wsd_lr(cfg, 10**9) == 2.0


def test_negative_tokens_rejected():
    with pytest.raises(ValueError, match="consumed tokens"):
        wsd_lr(CFG, -1)
