"""Mixture controllers (cpt.mixture): the topic-PPL rule against hand-computed cases, its guards, the
static / schedule / EXP3 / forgetting-guard hooks, checked state round trips, entry-point loading.

The hooks run against the real HookContext, fed by a tiny in-test run state (`Run`) with plain
lambdas -- the same API the trainer implements.
"""
from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import example, given, settings, strategies as st

from cpt.mixture import EXP3Mixture, ForgettingGuard, ScheduleMixture, StaticMixture, TopicPPLMixture
from cpt.mixture.exp3 import exploration_rate
from cpt.mixture.shares import fit_to_bounds
from cpt.mixture.topic_ppl import normalize_deltas
from cpt.train.hooks import EvalMetrics, HookContext, build_hook, merge_update


class Run:
    """Run state behind a real HookContext: weights, exhausted streams, progress, and the log."""

    def __init__(self, weights: dict[str, float], exhausted=(), step: int = 0, tokens: int = 0):
        self.weights, self.exhausted = dict(weights), frozenset(exhausted)
        self.step, self.tokens, self.logs = step, tokens, []
        self.ctx = HookContext(
            stream_names=list(weights),
            weights=lambda: dict(self.weights),
            samples=lambda: {s: 0 for s in self.weights},
            exhausted=lambda: self.exhausted,
            progress=lambda: (self.step, self.tokens),
            log=lambda kind, figures, line: self.logs.append((kind, figures, line)),
            total_steps=1000,
            tokens_per_step=1024,
            is_logging_rank=True,
        )

    def apply(self, update):
        """What the trainer does with a returned update (merge_update, hooks.py); returns the update."""
        if update is not None:
            self.weights = merge_update(self.weights, update, "test")
        return update


def evals(step: int, ppl: dict[str, float] | None = None, loss: dict[str, float] | None = None,
          tokens: dict[str, float] | None = None) -> EvalMetrics:
    """EvalMetrics with per-stream ppl (loss = log ppl) or loss (ppl = exp loss)."""
    if ppl is None:
        ppl = {s: math.exp(v) for s, v in loss.items()}
    streams = {s: {"ppl": p, "loss": math.log(p) if loss is None else loss[s], "tokens": (tokens or {}).get(s, 100.0)}
               for s, p in ppl.items()}
    return EvalMetrics(step=step, consumed_tokens=step * 1024, loss=None, ppl=None, streams=streams)


def approx(expected: dict[str, float]):
    return pytest.approx(expected, abs=1e-12)


# ---- topic_ppl: the arithmetic ---------------------------------------------------------------------

W3 = {"a": 0.5, "b": 0.3, "c": 0.2}
FIRST = {"a": 10.0, "b": 10.0, "c": 10.0}
# a rises by 1, b falls by 0.5, c stays: dp = (1, -0.5, 0)
SECOND = {"a": 11.0, "b": 9.5, "c": 10.0}


def two_evals(hook, weights=W3, first=FIRST, second=SECOND, exhausted=()):
    run = Run(weights)
    assert run.apply(hook.on_eval(run.ctx, 10, evals(10, first))) is None  # the first eval only records
    run.exhausted = frozenset(exhausted)
    run.step = 20
    return run, run.apply(hook.on_eval(run.ctx, 20, evals(20, {s: p for s, p in second.items() if s not in exhausted})))


def test_max_abs_hand_computed_rise_gets_more_fall_gets_less():
    # d = dp / max|dp| = (1, -0.5, 0); f = 1 + 0.5 d = (1.5, 0.75, 1); r*f = (0.75, 0.225, 0.2), sum 1.175
    run, update = two_evals(TopicPPLMixture(alpha=0.5, normalize="max_abs"))
    assert dict(update.weights) == approx({"a": 30 / 47, "b": 9 / 47, "c": 8 / 47})
    assert run.weights == approx({"a": 30 / 47, "b": 9 / 47, "c": 8 / 47})
    assert run.weights["a"] > W3["a"] and run.weights["b"] < W3["b"]


def test_sum_abs_hand_computed():
    # d = dp / 1.5 = (2/3, -1/3, 0); f = (4/3, 5/6, 1); r*f = (2/3, 1/4, 1/5), sum 67/60
    _, update = two_evals(TopicPPLMixture(alpha=0.5, normalize="sum_abs"))
    assert dict(update.weights) == approx({"a": 40 / 67, "b": 15 / 67, "c": 12 / 67})


def test_relative_delta_hand_computed_levels_do_not_dominate():
    # a 20 -> 22, b 10 -> 11, c stays: absolute dp = (2, 1, 0), relative dp/p = (0.1, 0.1, 0)
    first, second = {"a": 20.0, "b": 10.0, "c": 10.0}, {"a": 22.0, "b": 11.0, "c": 10.0}
    # relative: d = (1, 1, 0); f = (1.5, 1.5, 1); r*f = (0.75, 0.45, 0.2), sum 1.4
    _, update = two_evals(TopicPPLMixture(alpha=0.5, delta="relative"), first=first, second=second)
    assert dict(update.weights) == approx({"a": 15 / 28, "b": 9 / 28, "c": 4 / 28})
    assert update.details["delta_ppl"] == approx({"a": 0.1, "b": 0.1, "c": 0.0})
    # absolute (the default): d = (1, 0.5, 0); f = (1.5, 1.25, 1); r*f = (0.75, 0.375, 0.2), sum 1.325
    _, update = two_evals(TopicPPLMixture(alpha=0.5), first=first, second=second)
    assert dict(update.weights) == approx({"a": 0.75 / 1.325, "b": 0.375 / 1.325, "c": 0.2 / 1.325})
    with pytest.raises(ValueError, match="delta"):
        TopicPPLMixture(delta="ratio")


def test_zscore_hand_computed():
    # mean dp = 1/6, deviations (5/6, -2/3, -1/6), population variance 7/18
    std = math.sqrt(7 / 18)
    f = {"a": 1 + 0.5 * (5 / 6) / std, "b": 1 + 0.5 * (-2 / 3) / std, "c": 1 + 0.5 * (-1 / 6) / std}
    mass = sum(W3[s] * f[s] for s in W3)
    _, update = two_evals(TopicPPLMixture(alpha=0.5, normalize="zscore"))
    assert dict(update.weights) == approx({s: W3[s] * f[s] / mass for s in W3})


@pytest.mark.parametrize("how", ["max_abs", "sum_abs", "zscore"])
def test_all_equal_changes_nothing(how):
    hook = TopicPPLMixture(alpha=0.5, normalize=how)
    run, update = two_evals(hook, second={"a": 10.3, "b": 10.3, "c": 10.3})
    assert update is None and run.weights == W3
    record = run.logs[-1][1]
    assert record["updated"] is False and len(set(record["factor"].values())) == 1
    # equal nonzero dp give equal nonzero d by max or sum (factors that cancel out), 0 by z-score
    expected = {"max_abs": 1.0, "sum_abs": 1 / 3, "zscore": 0.0}[how]
    assert record["delta"] == approx({"a": expected, "b": expected, "c": expected})


def test_normalize_deltas_zero_denominators():
    for how in ("max_abs", "sum_abs", "zscore"):
        assert normalize_deltas([0.0, 0.0], how) == [0.0, 0.0]
    assert normalize_deltas([0.1, 0.1, 0.1], "zscore") == [0.0, 0.0, 0.0]
    assert normalize_deltas([2.0, -1.0], "max_abs") == [1.0, -0.5]


def test_exhausted_stream_keeps_zero_and_is_left_out():
    # c ran dry: live a, b with shares 0.625/0.375; d = (1, -0.5); f = (1.5, 0.75); r*f = (0.9375, 0.28125)
    hook = TopicPPLMixture(alpha=0.5)
    run, update = two_evals(hook, weights={"a": 0.625, "b": 0.375, "c": 0.0}, exhausted={"c"})
    assert dict(update.weights) == approx({"a": 10 / 13, "b": 3 / 13, "c": 0.0})
    record = run.logs[-1][1]
    assert record["exhausted"] == ["c"] and "c" not in record["delta"]
    # an exhausted stream that still shows a share is set to 0 explicitly
    _, update = two_evals(TopicPPLMixture(alpha=0.5), exhausted={"c"})
    assert update.weights["c"] == 0.0 and update.weights["a"] + update.weights["b"] == pytest.approx(0.8)


def test_groups_keep_their_totals_and_normalise_inside():
    weights = {"zh_a": 0.1, "zh_b": 0.1, "en_c": 0.4, "en_d": 0.4}
    hook = TopicPPLMixture(alpha=0.5, groups=[["zh_a", "zh_b"], ["en_c", "en_d"]])
    run = Run(weights)
    run.apply(hook.on_eval(run.ctx, 1, evals(1, {"zh_a": 10, "zh_b": 10, "en_c": 10, "en_d": 10})))
    run.apply(hook.on_eval(run.ctx, 2, evals(2, {"zh_a": 10.1, "zh_b": 9.9, "en_c": 15, "en_d": 10})))
    # zh: dp = (0.1, -0.1) -> d = (1, -1) -> f = (1.5, 0.5): 0.2 * (0.15, 0.05) / 0.2
    # en: dp = (5, 0) -> d = (1, 0) -> f = (1.5, 1): 0.8 * (0.6, 0.4) / 1.0
    assert run.weights == approx({"zh_a": 0.15, "zh_b": 0.05, "en_c": 0.48, "en_d": 0.32})
    assert run.logs[-1][1]["group_totals"] == approx([0.2, 0.8])


def test_streams_option_leaves_the_others_alone():
    hook = TopicPPLMixture(alpha=0.5, streams=["a", "b"])
    run, update = two_evals(hook)
    assert set(update.weights) == {"a", "b"} and run.weights["c"] == pytest.approx(0.2)
    assert run.weights["a"] + run.weights["b"] == pytest.approx(0.8)


def test_priority_scales_the_move():
    # w_b = 2: f_b = 1 + 0.5 * (-0.5) * 2 = 0.5; r*f = (0.75, 0.15, 0.2), sum 1.1
    _, update = two_evals(TopicPPLMixture(alpha=0.5, priority={"b": 2.0}))
    assert dict(update.weights) == approx({"a": 0.75 / 1.1, "b": 0.15 / 1.1, "c": 0.2 / 1.1})


def test_factor_floor():
    # alpha 2: f_b = 1 + 2 * (-1) = -1 -> floor 0.01; r*f = (1.5, 0.003, 0.2)
    hook = TopicPPLMixture(alpha=2.0, min_factor=0.01)
    _, update = two_evals(hook, second={"a": 11.0, "b": 9.0, "c": 10.0})
    assert dict(update.weights) == approx({"a": 1.5 / 1.703, "b": 0.003 / 1.703, "c": 0.2 / 1.703})


def test_every_k_evals_measures_dp_since_the_last_update():
    hook = TopicPPLMixture(alpha=0.5, every=2)
    run = Run(W3)
    assert hook.on_eval(run.ctx, 1, evals(1, FIRST)) is None
    assert hook.on_eval(run.ctx, 2, evals(2, {"a": 50.0, "b": 1.0, "c": 10.0})) is None  # skipped
    update = run.apply(hook.on_eval(run.ctx, 3, evals(3, SECOND)))
    assert dict(update.weights) == approx({"a": 30 / 47, "b": 9 / 47, "c": 8 / 47})  # dp against eval 1


def test_every_quantity_is_logged():
    run, _ = two_evals(TopicPPLMixture(alpha=0.5))
    kind, record, line = run.logs[-1]
    assert kind == "mixture" and line and "topic_ppl" in line
    for key in ("hook", "weights_before", "weights_after", "ppl", "ppl_prev", "delta_ppl", "delta", "priority",
                "factor", "proposed", "share_low", "share_high", "group_totals"):
        assert key in record, key
    assert record["hook"] == "topic_ppl" and record["weights_before"] == W3
    assert record["delta_ppl"] == approx({"a": 1.0, "b": -0.5, "c": 0.0})
    json.dumps(record)  # a metrics.jsonl line


# ---- topic_ppl: guards -----------------------------------------------------------------------------

def test_max_share_clips_and_the_rest_renormalise():
    # proposal (30, 9, 8)/47: a capped at 0.6, b and c share 0.4 as 9:8
    _, update = two_evals(TopicPPLMixture(alpha=0.5, max_share=0.6))
    assert dict(update.weights) == approx({"a": 0.6, "b": 0.4 * 9 / 17, "c": 0.4 * 8 / 17})


def test_max_change_clips_then_the_group_total_is_restored():
    # a <= 0.55, b >= 0.27, c in [0.18, 0.22]: a at its top, b at its bottom, c takes the rest
    _, update = two_evals(TopicPPLMixture(alpha=0.5, max_change=0.1))
    assert dict(update.weights) == approx({"a": 0.55, "b": 0.27, "c": 0.18})


def test_min_share_wins_over_max_change():
    hook = TopicPPLMixture(alpha=0.5, max_change=0.1, min_share={"c": 0.3})
    run, update = two_evals(hook)
    # c's bounds are [0.3, 0.3]; a and b may give only 0.05 + 0.03 < 0.1 under max_change, so
    # max_change is relaxed: c = 0.3, a and b share 0.7 as their proposal 30:9
    assert dict(update.weights) == approx({"a": 0.7 * 30 / 39, "b": 0.7 * 9 / 39, "c": 0.3})
    assert run.logs[-1][1]["max_change_relaxed_groups"] == [0]
    assert run.logs[-1][1]["infeasible_groups"] == []


def test_infeasible_bounds_are_logged_not_fatal():
    hook = TopicPPLMixture(alpha=0.5, max_share=0.2)  # 3 * 0.2 < 1
    run, update = two_evals(hook)
    assert run.logs[-1][1]["infeasible_groups"] == [0]
    assert sum(run.weights.values()) == pytest.approx(1.0)


def test_guards_hold_over_many_updates_with_22_topics():
    rng = random.Random(7)
    names = [f"t{i}" for i in range(22)]
    hook = TopicPPLMixture(alpha=1.5, min_share=0.02, max_share=0.09, max_change=0.25, normalize="zscore",
                           groups=[names[:5], names[5:]])
    run = Run({s: 1 / 22 for s in names})
    totals = (5 / 22, 17 / 22)
    ppl = {s: 10.0 for s in names}
    for step in range(1, 60):
        old = dict(run.weights)
        ppl = {s: p * math.exp(rng.gauss(0, 0.1)) for s, p in ppl.items()}
        run.apply(hook.on_eval(run.ctx, step, evals(step, ppl)))
        for s in names:
            assert 0.02 - 1e-12 <= run.weights[s] <= 0.09 + 1e-12
            assert abs(run.weights[s] - old[s]) <= 0.25 * old[s] + 1e-12 or run.weights[s] in (
                pytest.approx(0.02), pytest.approx(0.09))
        assert sum(run.weights[s] for s in names[:5]) == pytest.approx(totals[0], abs=1e-12)
        assert sum(run.weights[s] for s in names[5:]) == pytest.approx(totals[1], abs=1e-12)
        assert run.logs[-1][1].get("infeasible_groups", []) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 0.5), st.floats(0, 0.5)), min_size=1, max_size=25),
       st.floats(0.01, 1.0))
@example(rows=[(0.0, 0.0, 5e-324)], total=0.5)  # denormal bounds: scaled without underflow
def test_fit_to_bounds_is_the_clip_renormalise_fixed_point(rows, total):
    raw = [r for r, _, _ in rows]
    low = [min(a, b) for _, a, b in rows]
    high = [max(a, b) for _, a, b in rows]
    x, ok = fit_to_bounds(raw, low, high, total)
    assert ok == (sum(low) <= total <= sum(high))
    assert sum(x) == pytest.approx(total, rel=1e-9, abs=1e-12)
    if not ok:
        return
    assert all(lo - 1e-12 <= v <= hi + 1e-12 for v, lo, hi in zip(x, low, high))
    # shares below 1e-15 of the largest count as 0 (documented): the common factor is over the rest
    top = max(raw)
    raw = [r if top > 0 and r >= 1e-15 * top else 0.0 for r in raw]
    # free shares (strictly inside their bounds, raw > 0) share one common factor of raw
    ratios = [v / r for v, r, lo, hi in zip(x, raw, low, high) if r > 0 and lo + 1e-9 < v < hi - 1e-9]
    if ratios:
        assert max(ratios) == pytest.approx(min(ratios), rel=1e-6)
        lam = ratios[0]
        # a share at a bound is there because lam * raw is beyond it
        for v, r, lo, hi in zip(x, raw, low, high):
            if r > 0 and v == lo and lo < hi:
                assert lam * r <= lo * (1 + 1e-6) + 1e-12
            if r > 0 and v == hi and lo < hi:
                assert lam * r >= hi * (1 - 1e-6) - 1e-12


# ---- topic_ppl: options, state ---------------------------------------------------------------------

@pytest.mark.parametrize("options, match", [
    ({"alpha": -1}, "'alpha'"),
    ({"normalize": "l2"}, "'normalize'"),
    ({"every": 0}, "'every'"),
    ({"max_change": 0}, "'max_change'"),
    ({"groups": [["a", "b"], ["b", "c"]]}, "more than one group"),
    ({"streams": ["a", "b"], "groups": [["a"]]}, "must split option 'streams'"),
    ({"streams": ["a"], "priority": {"b": 1}}, "'priority'"),
    ({"min_share": 0.5, "max_share": 0.4, "streams": ["a"]}, "exceeds its max_share"),
])
def test_topic_ppl_refuses_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        TopicPPLMixture(**options)


def test_unknown_stream_and_missing_validation_are_clear_errors():
    run = Run(W3)
    with pytest.raises(ValueError, match="does not have"):
        TopicPPLMixture(streams=["a", "zz"]).on_train_start(run.ctx)
    with pytest.raises(ValueError, match="no validation ppl for stream 'c'"):
        TopicPPLMixture(streams=["a", "c"]).on_eval(run.ctx, 1, evals(1, {"a": 3.0}))
    with pytest.raises(ValueError, match="is nan"):
        TopicPPLMixture().on_eval(run.ctx, 1, evals(1, {"a": 3.0, "b": float("nan"), "c": 2.0}))


def drive(hook, run, ppls, start=1):
    out = []
    for i, ppl in enumerate(ppls, start):
        run.step = i
        update = run.apply(hook.on_eval(run.ctx, i, evals(i, ppl)))
        out.append(None if update is None else dict(update.weights))
    return out


def test_topic_ppl_resume_makes_the_same_next_update():
    rng = random.Random(3)
    names = [f"t{i}" for i in range(6)]
    ppls = [{s: 5 + rng.random() for s in names} for _ in range(6)]
    options = dict(alpha=0.8, normalize="sum_abs", max_change=0.3, groups=[names[:2], names[2:]])
    straight = Run({s: 1 / 6 for s in names})
    expected = drive(TopicPPLMixture(**options), straight, ppls)

    first = TopicPPLMixture(**options)
    run = Run({s: 1 / 6 for s in names})
    assert drive(first, run, ppls[:3]) == expected[:3]
    state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint keeps
    resumed = TopicPPLMixture(**options)
    resumed.load_state_dict(state)
    assert resumed.on_train_start(run.ctx) is None
    assert drive(resumed, run, ppls[3:], start=4) == expected[3:]
    assert run.weights == straight.weights


def test_topic_ppl_refuses_foreign_state():
    hook = TopicPPLMixture(alpha=0.5)
    two_evals(hook)
    state = hook.state_dict()
    with pytest.raises(ValueError, match="'version' is 99"):
        TopicPPLMixture().load_state_dict({**state, "version": 99})
    with pytest.raises(ValueError, match="'kind'"):
        TopicPPLMixture().load_state_dict(EXP3Mixture().state_dict())
    with pytest.raises(ValueError, match="missing fields"):
        TopicPPLMixture().load_state_dict({"version": 1, "kind": "topic_ppl", "streams": None})
    with pytest.raises(ValueError, match="expected a mapping"):
        TopicPPLMixture().load_state_dict([1])


def test_topic_ppl_follows_a_recipe_edit_of_its_streams():
    """Resumed under a recipe that dropped b and added d: b's state goes, d joins with dp 0 at its
    first update (factor 1), the others move as without the edit, and the record says so."""
    hook = TopicPPLMixture(alpha=0.5)
    two_evals(hook)
    resumed = TopicPPLMixture(alpha=0.5)
    resumed.load_state_dict(json.loads(json.dumps(hook.state_dict())))
    run = Run({"a": 0.5, "c": 0.2, "d": 0.3})
    assert resumed.on_train_start(run.ctx) is None  # b is gone: no refusal
    update = run.apply(resumed.on_eval(run.ctx, 30, evals(30, {"a": 12.0, "c": 10.0, "d": 7.0})))
    assert resumed.streams == ("a", "c", "d") and set(resumed.reference_ppl) == {"a", "c", "d"}
    record = run.logs[-1][1]
    assert record["streams_changed"] == {"dropped": ["b"], "added": ["d"]}
    assert record["delta_ppl"]["d"] == 0.0 and record["factor"]["d"] == 1.0 and record["factor"]["a"] > 1.0
    assert sum(update.weights.values()) == pytest.approx(1.0) and update.weights["a"] > 0.5
    # with the `streams` option, the resumed recipe's option wins over the checkpoint's streams
    named = TopicPPLMixture(streams=["a", "b"])
    named.load_state_dict(json.loads(json.dumps(hook.state_dict())))
    assert named.streams == ("a", "b") and set(named.reference_ppl) == {"a", "b"}


def test_exp3_refuses_a_recipe_edit_of_its_streams():
    hook = EXP3Mixture(seed=1)
    run = Run(W3)
    for step in (10, 20):
        run.apply(hook.on_eval(run.ctx, step, evals(step, FIRST)))
    resumed = EXP3Mixture(seed=1)
    resumed.load_state_dict(json.loads(json.dumps(hook.state_dict())))
    run = Run({"a": 0.5, "c": 0.5})
    resumed.on_train_start(run.ctx)
    with pytest.raises(ValueError, match=r"^hook 'exp3' \(exp3\): its checkpoint controls streams "
                                         r"\['a', 'b', 'c'\], the resumed recipe validates \['a', 'c'\]: "
                                         r"exp3 does not follow a recipe edit"):
        resumed.on_eval(run.ctx, 30, evals(30, {"a": 10.0, "c": 10.0}))


def test_default_streams_are_fixed_at_the_first_eval():
    hook = TopicPPLMixture(alpha=0.5)
    run = Run(W3)
    hook.on_eval(run.ctx, 1, evals(1, {"a": 10.0, "b": 10.0}))  # c has no held-out documents
    assert hook.streams == ("a", "b")
    with pytest.raises(ValueError, match="no validation ppl for stream 'b'"):
        hook.on_eval(run.ctx, 2, evals(2, {"a": 10.0, "c": 3.0}))


# ---- static ----------------------------------------------------------------------------------------

def test_static_sets_its_weights_once():
    hook = StaticMixture(weights={"a": 2, "b": 1, "c": 1})
    run = Run(W3)
    update = run.apply(hook.on_train_start(run.ctx))
    assert dict(update.weights) == approx({"a": 0.5, "b": 0.25, "c": 0.25})
    assert run.apply(hook.on_train_start(run.ctx)) is None  # a resume: already in force
    assert hook.on_eval(run.ctx, 1, evals(1, FIRST)) is None
    assert run.logs[0][1]["weights_after"] == approx({"a": 0.5, "b": 0.25, "c": 0.25})


def test_static_zeroes_exhausted_streams_and_checks_names():
    run = Run(W3, exhausted={"c"})
    update = StaticMixture(weights={"a": 1, "b": 1, "c": 2}).on_train_start(run.ctx)
    assert dict(update.weights) == approx({"a": 0.5, "b": 0.5, "c": 0.0})
    with pytest.raises(ValueError, match=r"missing \['c'\]"):
        StaticMixture(weights={"a": 1, "b": 1}).on_train_start(Run(W3).ctx)
    with pytest.raises(ValueError, match="does not have"):
        StaticMixture(weights={"a": 1, "b": 1, "c": 1, "d": 1}).on_train_start(Run(W3).ctx)
    with pytest.raises(ValueError, match="'weights.a'"):
        StaticMixture(weights={"a": -1})
    with pytest.raises(ValueError, match="field 'streams'"):
        StaticMixture(weights={"a": 1}).load_state_dict(StaticMixture(weights={"a": 1, "b": 1}).state_dict())


# ---- schedule --------------------------------------------------------------------------------------

POINTS = [[1000, {"a": 1, "b": 0}], [3000, {"a": 1, "b": 3}]]


def test_schedule_interpolates_in_tokens():
    hook = ScheduleMixture(points=POINTS)
    assert hook.at(0) == {"a": 1.0, "b": 0.0}
    assert hook.at(1000) == {"a": 1.0, "b": 0.0}
    assert hook.at(2000) == approx({"a": 0.625, "b": 0.375})  # halfway between (1, 0) and (0.25, 0.75)
    assert hook.at(10**9) == approx({"a": 0.25, "b": 0.75})


def test_schedule_updates_every_k_steps_above_tolerance():
    hook = ScheduleMixture(points=POINTS, every_steps=2, tolerance=0.01)
    run = Run({"a": 0.5, "b": 0.5})
    assert dict(run.apply(hook.on_train_start(run.ctx)).weights) == approx({"a": 1.0, "b": 0.0})
    run.tokens = 2000
    assert hook.on_step_end(run.ctx, 1, {}) is None  # not a multiple of every_steps
    assert dict(run.apply(hook.on_step_end(run.ctx, 2, {})).weights) == approx({"a": 0.625, "b": 0.375})
    run.tokens = 2020  # moves 0.0075 < tolerance
    assert hook.on_step_end(run.ctx, 4, {}) is None
    run.tokens = 2100
    assert dict(run.apply(hook.on_step_end(run.ctx, 6, {})).weights) == approx({"a": 0.5875, "b": 0.4125})
    assert [r["update"] for _, r, _ in run.logs] == [1, 2, 3]


def test_schedule_of_a_subset_divides_its_current_total_and_skips_exhausted():
    hook = ScheduleMixture(points=[[0, {"a": 1, "b": 1}]])
    run = Run({"a": 0.1, "b": 0.3, "c": 0.6})
    assert dict(run.apply(hook.on_train_start(run.ctx)).weights) == approx({"a": 0.2, "b": 0.2})
    assert run.weights["c"] == pytest.approx(0.6)
    run.exhausted = frozenset({"b"})
    assert dict(hook.on_step_end(run.ctx, 1, {}).weights) == approx({"a": 0.4, "b": 0.0})


def test_schedule_state_round_trip_and_refusal():
    hook = ScheduleMixture(points=POINTS)
    run = Run({"a": 0.5, "b": 0.5})
    run.apply(hook.on_train_start(run.ctx))
    resumed = ScheduleMixture(points=POINTS)
    resumed.load_state_dict(json.loads(json.dumps(hook.state_dict())))
    assert resumed.updates == 1 and resumed.on_train_start(run.ctx) is None  # the weights are on schedule
    with pytest.raises(ValueError, match="field 'streams'"):
        ScheduleMixture(points=[[0, {"a": 1, "c": 1}]]).load_state_dict(hook.state_dict())


@pytest.mark.parametrize("points, match", [
    ([], "'points'"),
    ([[0, {"a": 1}], [0, {"a": 1}]], r"points\[1\]\[0\]"),
    ([[0, {"a": 1}], [5, {"b": 1}]], r"points\[1\]\[1\]"),
    ([[-1, {"a": 1}]], r"points\[0\]\[0\]"),
    ([[0, {"a": 0}]], r"points\[0\]\[1\]"),
    ([[0, {"a": 1}, 3]], r"points\[0\]"),
])
def test_schedule_refuses_bad_points(points, match):
    with pytest.raises(ValueError, match=match):
        ScheduleMixture(points=points)


# ---- exp3 ------------------------------------------------------------------------------------------

def test_exploration_rate_schedule():
    assert exploration_rate(22, 0) == 1 / 22
    assert exploration_rate(22, 68) == 1 / 22  # sqrt(ln 22 / (22 t)) > 1/22 up to t = 68
    assert exploration_rate(22, 100) == pytest.approx(math.sqrt(math.log(22) / 2200))
    assert exploration_rate(1, 5) == 0.0


def test_exp3_one_update_by_hand():
    hook = EXP3Mixture(clock="steps", smoothing=0.9)
    run = Run({"a": 0.5, "b": 0.5})
    update = run.apply(hook.on_eval(run.ctx, 1000, evals(1000, loss={"a": 2.0, "b": 1.0})))
    eps = math.sqrt(math.log(2) / 2000)
    # rewards L / pi = (4, 2); R = 0.1 * (4, 2); softmax with eps_prev = 1/2 over (0.2, 0.1)
    soft_a = 1 / (1 + math.exp(-0.1))
    pa = (1 - 2 * eps) * soft_a + eps
    assert dict(update.weights) == approx({"a": pa, "b": 1 - pa})
    record = run.logs[-1][1]
    assert record["reward_estimate"] == approx({"a": 0.4, "b": 0.2}) and record["eps"] == pytest.approx(eps)
    assert hook.eps_prev == pytest.approx(eps)


def test_exp3_moves_share_to_the_higher_loss_stream_and_keeps_others_total():
    hook = EXP3Mixture(streams=["a", "b", "c"], clock="steps")
    run = Run({"a": 0.2, "b": 0.2, "c": 0.2, "d": 0.4})
    for step in range(500, 5000, 500):
        run.step = step
        run.apply(hook.on_eval(run.ctx, step, evals(step, loss={"a": 3.0, "b": 2.0, "c": 2.0, "d": 9.0})))
    assert run.weights["a"] > run.weights["b"] == pytest.approx(run.weights["c"])
    assert run.weights["d"] == pytest.approx(0.4)
    eps = exploration_rate(3, 4500)
    assert min(run.weights[s] / 0.6 for s in "abc") >= eps - 1e-12


def test_exp3_bandit_feedback_is_seeded_and_deterministic():
    def play(seed):
        hook, run, picks = EXP3Mixture(feedback="bandit", seed=seed, clock="updates"), Run(W3), []
        for step in range(1, 30):
            run.apply(hook.on_eval(run.ctx, step, evals(step, loss={"a": 2.0, "b": 2.5, "c": 1.0})))
            picks.append(run.logs[-1][1]["observed"])
        return picks, run.weights
    picks, weights = play(5)
    assert all(len(p) == 1 for p in picks)
    hook, run = EXP3Mixture(feedback="bandit", seed=5), Run(W3)
    hook.on_eval(run.ctx, 100, evals(100, loss={"a": 2.0, "b": 2.5, "c": 1.0}))
    observed = run.logs[-1][1]["observed"][0]
    assert [s for s, r in hook.rewards.items() if r != 0.0] == [observed]  # only the drawn arm learns
    assert play(5) == (picks, weights)
    assert play(6)[0] != picks


def test_exp3_exhausted_stream_gets_zero_and_k_shrinks():
    hook = EXP3Mixture(streams=["a", "b", "c"], clock="updates")
    run = Run({"a": 0.6, "b": 0.3, "c": 0.1}, exhausted={"c"})
    update = hook.on_eval(run.ctx, 1, evals(1, loss={"a": 2.0, "b": 1.0}))
    # K = 2 live streams: eps_1 = min(1/2, sqrt(ln 2 / 2)) = 1/2, a uniform policy over a and b
    assert run.logs[-1][1]["eps"] == 0.5
    assert dict(update.weights) == approx({"a": 0.45, "b": 0.45, "c": 0.0})


def test_exp3_resume_makes_the_same_next_updates():
    losses = [{"a": 2.0 + 0.1 * i, "b": 2.5 - 0.05 * i, "c": 1.0} for i in range(8)]
    options = dict(feedback="bandit", seed=11, clock="steps")

    def drive_exp3(hook, run, rows, start):
        out = []
        for i, loss in enumerate(rows, start):
            update = run.apply(hook.on_eval(run.ctx, 100 * i, evals(100 * i, loss=loss)))
            out.append(None if update is None else dict(update.weights))
        return out

    straight = drive_exp3(EXP3Mixture(**options), Run(W3), losses, 1)
    first, run = EXP3Mixture(**options), Run(W3)
    assert drive_exp3(first, run, losses[:4], 1) == straight[:4]
    resumed = EXP3Mixture(**options)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert drive_exp3(resumed, run, losses[4:], 5) == straight[4:]
    with pytest.raises(ValueError, match="field 'streams'"):
        EXP3Mixture(streams=["a"]).load_state_dict(first.state_dict())


# ---- forgetting guard ------------------------------------------------------------------------------

FG_WEIGHTS = {"en1": 0.3, "en2": 0.2, "zh1": 0.25, "zh2": 0.25}
TOKENS = {"en1": 100.0, "en2": 300.0, "zh1": 50.0, "zh2": 50.0}


def fg_evals(step, en1, en2):
    return evals(step, loss={"en1": en1, "en2": en2, "zh1": 3.0, "zh2": 3.0}, tokens=TOKENS)


def test_forgetting_guard_uses_token_weighted_ppl():
    guard = ForgettingGuard(watch=["en1", "en2"])
    assert guard.watched_ppl(fg_evals(1, 2.0, 1.0)) == pytest.approx(math.exp((100 * 2 + 300 * 1) / 400))


def test_forgetting_guard_boosts_only_above_tolerance():
    guard = ForgettingGuard(watch=["en1", "en2"], tolerance=0.03, factor=1.2, max_share=0.65)
    run = Run(FG_WEIGHTS)
    guard.on_train_start(run.ctx)
    assert guard.on_eval(run.ctx, 1, fg_evals(1, 2.0, 1.0)) is None  # baseline exp(1.25)
    assert guard.on_eval(run.ctx, 2, fg_evals(2, 2.0, 1.02)) is None  # +1.5% PPL
    assert run.logs[-1][1]["triggered"] is False
    update = run.apply(guard.on_eval(run.ctx, 3, fg_evals(3, 2.0, 1.06)))  # +4.6% PPL
    # English 0.5 -> 0.6 in proportion 3:2, Chinese 0.5 -> 0.4 in proportion 1:1
    assert dict(update.weights) == approx({"en1": 0.36, "en2": 0.24, "zh1": 0.2, "zh2": 0.2})
    update = run.apply(guard.on_eval(run.ctx, 4, fg_evals(4, 2.0, 1.06)))  # still above: capped at 0.65
    assert update.weights["en1"] + update.weights["en2"] == pytest.approx(0.65)
    assert guard.on_eval(run.ctx, 5, fg_evals(5, 2.0, 1.06)) is None  # at max_share
    assert guard.triggers == 2


def test_forgetting_guard_baseline_survives_resume():
    guard = ForgettingGuard(watch=["en1", "en2"], boost=["en2"], tolerance=0.03)
    run = Run(FG_WEIGHTS)
    guard.on_eval(run.ctx, 1, fg_evals(1, 2.0, 1.0))
    resumed = ForgettingGuard(watch=["en1", "en2"], boost=["en2"], tolerance=0.03)
    resumed.load_state_dict(json.loads(json.dumps(guard.state_dict())))
    update = resumed.on_eval(run.ctx, 2, fg_evals(2, 2.0, 1.1))  # a fresh guard would take this as baseline
    assert update is not None and update.weights["en2"] == pytest.approx(0.22)
    assert update.weights["en1"] == pytest.approx(0.3 * 0.78 / 0.8)
    with pytest.raises(ValueError, match="field 'streams'"):
        ForgettingGuard(watch=["en1"]).load_state_dict(guard.state_dict())


def test_forgetting_guard_checks_its_streams():
    with pytest.raises(ValueError, match="does not have"):
        ForgettingGuard(watch=["en9"]).on_train_start(Run(FG_WEIGHTS).ctx)
    with pytest.raises(ValueError, match="nothing to take share from"):
        ForgettingGuard(watch=["en1"], boost=list(FG_WEIGHTS)).on_train_start(Run(FG_WEIGHTS).ctx)
    with pytest.raises(ValueError, match="'factor'"):
        ForgettingGuard(watch=["en1"], factor=1.0)


# ---- entry points ----------------------------------------------------------------------------------

@pytest.mark.parametrize("use, options, cls", [
    ("topic_ppl", {"alpha": 0.3, "normalize": "zscore"}, TopicPPLMixture),
    ("static", {"weights": {"a": 1}}, StaticMixture),
    ("schedule", {"points": POINTS}, ScheduleMixture),
    ("exp3", {"seed": 3}, EXP3Mixture),
    ("forgetting_guard", {"watch": ["en1"]}, ForgettingGuard),
    ("cpt.mixture.topic_ppl:TopicPPLMixture", {}, TopicPPLMixture),
])
def test_build_hook_finds_the_controllers(use, options, cls):
    hook = build_hook(use, options, "hooks[0]")
    assert type(hook) is cls


def test_build_hook_names_a_misspelt_option():
    with pytest.raises(ValueError, match=r"hooks\[0\]\.options.*alfa"):
        build_hook("topic_ppl", {"alfa": 0.3}, "hooks[0]")
