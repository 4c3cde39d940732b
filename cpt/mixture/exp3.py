"""ODM's EXP3 online data mixer (Albalak et al. 2023, "Efficient Online Data Mixing for Language Model
Pre-Training", arXiv:2312.02406), driven by per-stream validation loss.

ODM treats each domain as a bandit arm. At step t it samples a domain from

    pi_t(i) = (1 - K eps_t) * softmax(eps_{t-1} * R)_i + eps_t,    eps_t = min(1/K, sqrt(ln K / (K t)))

trains on a batch of it, and updates that arm's reward estimate with the batch's *training loss* L
(higher loss: more left to learn), importance-weighted and smoothed:

    R_i <- smoothing * R_i + (1 - smoothing) * L / pi_t(i)

Here the controller runs at evaluations, and the reward is each stream's *validation* loss on its
held-out documents (eval_metrics.streams[i]["loss"]): the loss of the training batches is not split
by stream in this trainer, and validation loss on fixed documents is a less noisy signal. The
differences, and why:

- feedback "full" (default): every live stream is observed at every eval, so every R_i is updated,
  each importance-weighted by the share it had since the last update (ODM's estimator applied to
  every arm, as when a batch mixes domains). feedback "bandit": one stream j is drawn from those
  shares with a generator seeded by (seed, update number) and only R_j is updated -- ODM's bandit
  feedback, reproducible and resumable without storing generator state.
- pi(i) in the importance weight is the share in force (ctx.weights(), renormalised over the live
  controlled streams), floored at eps_t: EXP3's own policy never goes below eps_t, so the floor only
  matters for shares set by the recipe or another hook, and it bounds the weight by 1/eps_t.
- clock "steps" (default): t in eps_t is the training step, so the exploration rate at a point of
  training is the one ODM, updating every step, would have there; clock "updates": t counts this
  controller's updates (ODM's update count, but evals are ~100x rarer than steps, and with K = 22
  eps_t stays at 1/K -- a uniform mixture -- for the first 68 updates).
- eps_{t-1} is the exploration rate of the previous update (1/K before the first).

The new policy is written as shares of the controlled streams' current total, so the other streams
keep theirs. Exhausted streams get 0 and K counts the live streams. `every: k` updates at every k-th
eval. Every quantity of every update is logged as one "mixture" record.
"""
from __future__ import annotations

import math
import random
from typing import Any, Mapping, Optional, Sequence

from cpt.mixture.base import ValidatedStreamsController
from cpt.train.hooks import EvalMetrics, HookContext, MixtureUpdate


def exploration_rate(k: int, t: int) -> float:
    """ODM's eps_t = min(1/K, sqrt(ln K / (K t))); 1/K at t = 0."""
    if k <= 1:
        return 0.0
    if t <= 0:
        return 1.0 / k
    return min(1.0 / k, math.sqrt(math.log(k) / (k * t)))


def exp3_policy(rewards: Sequence[float], eps: float, eps_prev: float) -> list[float]:
    """(1 - K eps) * softmax(eps_prev * R) + eps, computed stably."""
    k = len(rewards)
    if k == 0:
        return []
    scaled = [eps_prev * r for r in rewards]
    top = max(scaled)
    e = [math.exp(x - top) for x in scaled]
    z = sum(e)
    return [(1.0 - k * eps) * x / z + eps for x in e]


class EXP3Mixture(ValidatedStreamsController):
    """ODM's EXP3 mixer (module docstring): options are the recipe's `hooks[i].options`."""

    kind = "exp3"

    def __init__(
        self,
        *,
        streams: Optional[Sequence[str]] = None,
        smoothing: float = 0.9,
        feedback: str = "full",
        clock: str = "steps",
        every: int = 1,
        seed: int = 0,
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name)
        self._streams_option = None if streams is None else self._names("streams", streams)
        self.smoothing = self._number("smoothing", smoothing, low=0.0, high=1.0)
        if self.smoothing == 1.0:
            raise self._err("smoothing", "must be < 1 (1 would never learn a reward)")
        self.feedback = self._choice("feedback", feedback, ("full", "bandit"))
        self.clock = self._choice("clock", clock, ("steps", "updates"))
        self.every = self._count("every", every)
        self.seed = self._count("seed", seed, low=0)
        # state
        self.streams: Optional[tuple[str, ...]] = self._streams_option
        self.rewards: dict[str, float] = {}
        self.evals = 0
        self.updates = 0
        self.eps_prev: Optional[float] = None

    def on_eval(self, ctx: HookContext, step: int, eval_metrics: EvalMetrics) -> Optional[MixtureUpdate]:
        streams, live, loss = self._live_metric(ctx, eval_metrics, "loss")
        exhausted = set(streams) - set(live)
        self.evals += 1
        if (self.evals - 1) % self.every or not live:
            return None
        before = ctx.weights()
        k = len(live)
        t = step if self.clock == "steps" else self.updates + 1
        eps = exploration_rate(k, t)
        eps_prev = exploration_rate(k, 0) if self.eps_prev is None else self.eps_prev
        total = sum(before[s] for s in live)
        pi = {s: (before[s] / total if total > 0 else 1.0 / k) for s in live}
        weight = {s: 1.0 / max(pi[s], eps) if max(pi[s], eps) > 0 else 1.0 for s in live}
        observed = live if self.feedback == "full" else [self._draw(live, pi)]
        reward = {s: loss[s] * weight[s] for s in observed}
        for s in observed:
            self.rewards[s] = self.smoothing * self.rewards.get(s, 0.0) + (1.0 - self.smoothing) * reward[s]
        estimates = [self.rewards.get(s, 0.0) for s in live]
        policy = dict(zip(live, exp3_policy(estimates, eps, eps_prev)))
        share_total = total if total > 0 else 1.0
        shares = {s: 0.0 for s in streams if s in exhausted}
        shares.update({s: share_total * p for s, p in policy.items()})
        self.eps_prev = eps
        self.updates += 1
        figures = {
            "eval": self.evals, "update": self.updates, "t": t, "clock": self.clock, "feedback": self.feedback,
            "eps": eps, "eps_prev": eps_prev, "loss": loss, "sampling_share": pi, "importance_weight": weight,
            "observed": list(observed), "reward": reward,
            "reward_estimate": {s: self.rewards.get(s, 0.0) for s in live},
            "policy": policy, "exhausted": sorted(set(streams) & exhausted),
        }
        return self._finish(ctx, before, shares, figures, f"update {self.updates} at eval {self.evals}")

    def _draw(self, live: Sequence[str], pi: Mapping[str, float]) -> str:
        """One stream drawn from pi, the same for the same (seed, update number) in any process."""
        rng = random.Random(f"cpt.mixture.exp3:{self.seed}:{self.updates + 1}")
        u, acc = rng.random() * sum(pi[s] for s in live), 0.0
        for s in live:
            acc += pi[s]
            if u < acc:
                return s
        return live[-1]

    def state_dict(self) -> dict[str, Any]:
        return self._state(self.streams, rewards=dict(self.rewards), evals=self.evals, updates=self.updates,
                           eps_prev=self.eps_prev)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._check_state(state, self._streams_option, ("rewards", "evals", "updates", "eps_prev"))
        streams = None if state["streams"] is None else tuple(state["streams"])
        rewards = {str(s): float(r) for s, r in dict(state["rewards"]).items()}
        if streams is not None and not set(rewards) <= set(streams):
            raise ValueError(f"{type(self).__name__} {self.name!r}: refusing state: rewards name "
                             f"{sorted(set(rewards) - set(streams))} outside its streams")
        self.streams, self.rewards = streams, rewards
        self.evals, self.updates = int(state["evals"]), int(state["updates"])
        self.eps_prev = None if state["eps_prev"] is None else float(state["eps_prev"])
