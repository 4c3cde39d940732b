"""The sweep report's statistics against published t-table values and hand-computed figures."""
from __future__ import annotations

import math

import pytest

from cpt.sweep.report import compare, default_metrics, render_markdown
from cpt.sweep.stats import mean_interval, paired_difference, t_cdf, t_quantile, verdict

# Student's t, two-sided 95% (0.975 quantile) and 99% (0.995), from the standard tables
T_TABLE = {1: (12.706, 63.657), 2: (4.303, 9.925), 3: (3.182, 5.841), 4: (2.776, 4.604), 5: (2.571, 4.032),
           9: (2.262, 3.250), 10: (2.228, 3.169), 20: (2.086, 2.845), 30: (2.042, 2.750), 120: (1.980, 2.617)}


@pytest.mark.parametrize("df", sorted(T_TABLE))
def test_t_quantile_matches_the_table(df):
    q95, q99 = T_TABLE[df]
    assert t_quantile(0.975, df) == pytest.approx(q95, abs=6e-4)
    assert t_quantile(0.995, df) == pytest.approx(q99, abs=6e-4)
    assert t_quantile(0.025, df) == pytest.approx(-t_quantile(0.975, df), abs=1e-12)


def test_t_quantile_closed_forms_and_limits():
    # df=1 is Cauchy: tan(pi (p - 1/2)); df=2: (2p-1) / sqrt(2 p (1-p))
    for p in (0.6, 0.9, 0.975, 0.999):
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
        assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9)
    assert t_quantile(0.975, 1e7) == pytest.approx(1.959964, abs=1e-5)  # the normal's
    assert t_cdf(0.0, 3) == pytest.approx(0.5) and t_cdf(t_quantile(0.9, 7), 7) == pytest.approx(0.9, abs=1e-10)
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)


def test_against_scipy_when_installed():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 4, 7, 15, 60):
        for p in (0.9, 0.95, 0.975, 0.995):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)


def test_mean_interval_by_hand():
    # values 10, 12, 14: mean 12, s = 2, half width = t(0.975, 2) * 2 / sqrt(3)
    iv = mean_interval([10.0, 12.0, 14.0])
    assert iv.mean == 12.0 and iv.sd == pytest.approx(2.0)
    assert iv.half_width == pytest.approx(4.302652729749 * 2 / math.sqrt(3), rel=1e-10)
    assert (iv.low, iv.high) == (pytest.approx(12 - iv.half_width), pytest.approx(12 + iv.half_width))
    one = mean_interval([5.0])
    assert one.n == 1 and one.half_width is None and one.low is None
    with pytest.raises(ValueError):
        mean_interval([])


def test_paired_difference_uses_common_seeds_and_direction():
    base = {1: 10.0, 2: 11.0, 3: 12.0, 4: 99.0}
    arm = {1: 9.0, 2: 9.8, 3: 11.2}  # seed 4 missing: not paired
    diff, seeds = paired_difference(arm, base)
    assert seeds == [1, 2, 3]
    d = [-1.0, -1.2, -0.8]
    assert diff.mean == pytest.approx(-1.0) and diff.sd == pytest.approx(0.2)
    assert diff.half_width == pytest.approx(4.302652729749 * 0.2 / math.sqrt(3))
    assert verdict(diff, lower_is_better=True) == "better"      # lower perplexity
    assert verdict(diff, lower_is_better=False) == "worse"      # lower accuracy
    noisy, _ = paired_difference({1: 9.0, 2: 12.0}, {1: 10.0, 2: 11.0})
    assert verdict(noisy, True) == "no significant difference"
    single, _ = paired_difference({1: 1.0}, {1: 2.0})
    assert verdict(single, True) == "no significant difference"  # no interval from one seed
    assert sum(d) / 3 == pytest.approx(diff.mean)


ROWS = [
    {"arm": "base", "seed": 1, "metrics": {"ppl": 20.0, "ppl/zh": 30.0, "acc": 0.50}},
    {"arm": "base", "seed": 2, "metrics": {"ppl": 22.0, "ppl/zh": 31.0, "acc": 0.52}},
    {"arm": "base", "seed": 3, "metrics": {"ppl": 21.0, "ppl/zh": 29.0, "acc": 0.51}},
    {"arm": "lh", "seed": 1, "metrics": {"ppl": 19.0, "ppl/zh": 33.0, "acc": 0.55}},
    {"arm": "lh", "seed": 2, "metrics": {"ppl": 21.2, "ppl/zh": 34.5, "acc": 0.56}},
    {"arm": "lh", "seed": 3, "metrics": {"ppl": 19.9, "ppl/zh": 31.5, "acc": 0.54}},
]


def test_compare_and_markdown_by_hand():
    assert default_metrics(ROWS) == ["ppl", "ppl/zh"]
    rep = compare(ROWS, ["base", "lh"], ["ppl", "ppl/zh", "acc"], "base", higher_is_better=["acc"])
    t2 = 4.302652729749
    ppl = rep["metrics"]["ppl"]["arms"]
    assert ppl["base"]["mean"] == pytest.approx(21.0) and ppl["base"]["half_width"] == pytest.approx(t2 / math.sqrt(3))
    # ppl differences -1.0, -0.8, -1.1: mean -0.9667, sd 0.15275
    d = [-1.0, -0.8, -1.1]
    m = sum(d) / 3
    sd = math.sqrt(sum((x - m) ** 2 for x in d) / 2)
    v = ppl["lh"]["vs_baseline"]
    assert v["mean"] == pytest.approx(m) and v["half_width"] == pytest.approx(t2 * sd / math.sqrt(3))
    assert v["relative"] == pytest.approx(m / 21.0) and v["verdict"] == "better"
    # zh: +3, +3.5, +2.5 -> worse (higher perplexity)
    assert rep["metrics"]["ppl/zh"]["arms"]["lh"]["vs_baseline"]["verdict"] == "worse"
    # accuracy +0.05, +0.04, +0.03: higher is better -> better
    assert rep["metrics"]["acc"]["arms"]["lh"]["vs_baseline"]["verdict"] == "better"
    md = render_markdown(rep, "t", ["lh/seed-4"])
    assert "| lh | 3 | 20.03 |" in md and "**better**" in md and "**worse**" in md
    assert "(baseline)" in md and "lh/seed-4" in md and "-4.60%" in md
    with pytest.raises(ValueError, match="not an arm"):
        compare(ROWS, ["base", "lh"], ["ppl"], "nope")


def test_write_report_refuses_an_unknown_metric(tmp_path):
    from cpt.sweep.report import write_report

    with pytest.raises(ValueError, match=r"metric\(s\) ppl/fr not in the results \(they have: acc, ppl, ppl/zh\)"):
        write_report(ROWS, tmp_path, "t", ["base", "lh"], ["ppl", "ppl/fr"], "base")
    rep = write_report(ROWS, tmp_path, "t", ["base", "lh"], [], None)
    assert list(rep["metrics"]) == ["ppl", "ppl/zh"] and "vs_baseline" not in rep["metrics"]["ppl"]["arms"]["lh"]
    assert (tmp_path / "plots" / "ppl__zh.png").stat().st_size > 1000 and "no baseline given" in (
        tmp_path / "report.md").read_text()
