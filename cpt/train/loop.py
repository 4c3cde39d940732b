"""The training loop: steps, tokens, learning rate, logging, evaluation, checkpoints, resume.

It drives any `cpt.train.engine.Engine` and reads samples by global index from an indexable
dataset, so the data position is the consumed-sample count and every rank derives its slice of a
global batch without talking to the others. Resume restores model, optimizer, RNG and counters and
continues with the very batches an uninterrupted run would have seen.

Stages: `training.stage` names the stage a recipe runs. Loading a checkpoint of another stage (the
previous stage's output via `training.load`) starts this stage from it: weights, optimizer, step
and consumed tokens (so the WSD schedule goes on), and the streams that exist in both stages carry
on where they stopped; `training.train_tokens` is this stage's budget. The run's own latest
checkpoint, when there is one, always wins over `training.load` (a restarted stage resumes itself).

Data hooks (cpt.train.hooks) are called at train start, after every step and after every
validation; a mixture change they return after step t applies from the first sample of step t+1.
Validation covers `data.valid_blend` and every stream's held-out documents (share: the stream's own
`valid_holdout`, else `data.valid_holdout`): per-stream loss and PPL, what the topic-mixture
controller reads.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Protocol

import numpy as np
import yaml

from cpt.config import Recipe, recipe_to_dict
from cpt.sampling.errors import StreamExhausted
from cpt.sampling.parallel import DataParallelLayout
from cpt.train.budget import resolve_schedule, train_samples
from cpt.train.checkpoint import CheckpointManager, reading, resolve_load_path, step_dir_name, trainer_state_summary
from cpt.train.data_bits import BITS_FILE, load_data_state, split_bits, write_bits
from cpt.train.engine import Batch, Engine, StepResult
from cpt.train.hook_runner import HookRunner
from cpt.train.hooks import EvalMetrics, HookContext
from cpt.train.metrics import MetricsLogger
from cpt.train.schedule import phase, wsd_lr

TRAINER_STATE_VERSION = 1


class SampleSource(Protocol):
    """Training or validation samples by global index (the data position is the index)."""

    def fetch(self, indices: np.ndarray) -> Batch:
        """One micro-batch: the samples at these global indices, stacked."""

    def prepare_step(self, start: int, stop: int) -> None:
        """Decide the ids of global samples [start, stop) before the step runs, on every rank alike,
        so a data error (a stream running dry) stops all ranks together instead of one mid-step."""


class TrainingStopped(RuntimeError):
    """The run stopped on purpose (non-finite loss under nan_policy=stop, too many skips)."""


def model_flops_per_token(num_parameters: int, num_layers: int, hidden: int, seq_length: int) -> float:
    """Training FLOPs per token: 6·N for the dense matmuls (forward + backward) plus 12·L·h·s for
    attention scores and values (the PaLM appendix formula, ignoring the causal half)."""
    return 6.0 * num_parameters + 12.0 * num_layers * hidden * seq_length


@dataclass
class TrainerState:
    """Counters saved in every checkpoint (versioned, checked on load)."""

    step: int = 0
    consumed_samples: int = 0
    consumed_tokens: int = 0
    skipped_steps: int = 0
    consecutive_skips: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": TRAINER_STATE_VERSION,
            "step": self.step,
            "consumed_samples": self.consumed_samples,
            "consumed_tokens": self.consumed_tokens,
            "skipped_steps": self.skipped_steps,
            "consecutive_skips": self.consecutive_skips,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str) -> "TrainerState":
        if d.get("version") != TRAINER_STATE_VERSION:
            raise ValueError(
                f"{where}: trainer state version {d.get('version')!r}, this cpt reads {TRAINER_STATE_VERSION}"
            )
        return cls(
            step=int(d["step"]),
            consumed_samples=int(d["consumed_samples"]),
            consumed_tokens=int(d["consumed_tokens"]),
            skipped_steps=int(d.get("skipped_steps", 0)),
            consecutive_skips=int(d.get("consecutive_skips", 0)),
            extra=dict(d.get("extra", {})),
        )


class Trainer:
    def __init__(
        self,
        recipe: Recipe,
        engine: Engine,
        train_data: SampleSource,
        valid_data: Optional[SampleSource] = None,
        logger: Optional[MetricsLogger] = None,
        valid_streams: Optional[Mapping[str, SampleSource]] = None,
    ) -> None:
        self.recipe = recipe
        self.engine = engine
        self.train_data = train_data
        self.valid_data = valid_data
        self.valid_streams = dict(valid_streams or {})
        t = recipe.training
        self.layout = engine.layout
        self.samples_per_rank = t.global_batch_size // self.layout.dp_size
        self.num_micro_batches = self.samples_per_rank // t.micro_batch_size
        self.dp_layout = DataParallelLayout(
            global_batch_size=t.global_batch_size, micro_batch_size=t.micro_batch_size, dp_size=self.layout.dp_size
        )
        self.tokens_per_step = t.global_batch_size * t.seq_length
        self.stage_steps = train_samples(recipe) // t.global_batch_size  # ValueError: a budget still in passes
        self.output_dir = Path(t.output_dir)
        self.logger = logger or MetricsLogger(self.output_dir, self.layout.is_logging_rank, t.tensorboard)
        self.ckpt = CheckpointManager(self.output_dir / "checkpoints", self.layout.is_logging_rank, engine.barrier,
                                      keep_last=t.keep_last, keep_every=t.keep_every,
                                      log=lambda message: self.logger.event(self.state.step, message))
        self.state = TrainerState()
        self.state.extra["stage"] = self._stage_record(0, 0, 0)
        self.flops_per_token = model_flops_per_token(
            engine.num_parameters, recipe.model.num_layers, recipe.model.hidden_size, t.seq_length
        )
        self.hooks = HookRunner.from_specs(recipe.hooks, self._hook_context(), engine.broadcast_object)
        self.train_seconds = self.eval_seconds = 0.0  # this process's time in steps / in validation
        self._context()
        info = dict(engine.start_info)  # the run's first line: device, dtype, kernels, attention
        self.logger.event(self.state.step, info.pop("line"), engine=info)

    # ------------------------------------------------------------------ stage and data position

    def _stage_record(self, step: int, samples: int, tokens: int) -> dict[str, Any]:
        return {"name": self.recipe.training.stage, "start_step": step, "start_samples": samples,
                "start_tokens": tokens}

    @property
    def stage(self) -> dict[str, Any]:
        return self.state.extra["stage"]

    @property
    def total_steps(self) -> int:
        """The step this stage ends at (steps count on across stages)."""
        return self.stage["start_step"] + self.stage_steps

    @property
    def data_position(self) -> int:
        """Index of the next training sample in this stage's sample sequence."""
        return self.state.consumed_samples - self.stage["start_samples"]

    def _context(self) -> None:
        """Fields every metrics record carries."""
        self.logger.context = {"stage": self.recipe.training.stage, "consumed_tokens": self.state.consumed_tokens}

    def _hook_context(self) -> HookContext:
        data = self.train_data
        names = tuple(getattr(data, "stream_names", ()))

        return HookContext(
            stream_names=names,
            weights=lambda: data.weights_at(self.data_position),
            samples=lambda: data.samples(),
            exhausted=lambda: data.exhausted(),
            progress=lambda: (self.state.step, self.state.consumed_tokens),
            log=lambda kind, figures, line=None: self.logger.log(kind, self.state.step, figures, line),
            total_steps=self.stage_steps,
            tokens_per_step=self.tokens_per_step,
            is_logging_rank=self.layout.is_logging_rank,
        )

    def _apply_weights(self, weights: Optional[dict[str, float]]) -> None:
        """Schedule hook-decided shares from the first sample of the next step, then log them."""
        if weights is None:
            return
        self.train_data.set_weights(weights, effective_at=self.data_position)
        self._log_data()

    def _log_data(self) -> None:
        if not hasattr(self.train_data, "samples"):
            return
        self.logger.log("data", self.state.step, {
            "weights": self.train_data.weights_at(self.data_position),
            "samples": self.train_data.samples(),
        })

    # ------------------------------------------------------------------ batches

    def _micro_batches(self, source: SampleSource, first_global_sample: int) -> Iterator[Batch]:
        """This rank's micro-batches of the global batch that starts at `first_global_sample`, in
        megatron's pretraining-sampler order (see cpt.sampling.parallel)."""
        mbs = self.recipe.training.micro_batch_size
        mine = self.dp_layout.global_indices(first_global_sample, self.layout.dp_rank)
        for m in range(self.num_micro_batches):
            yield source.fetch(mine[m * mbs:(m + 1) * mbs])

    # ------------------------------------------------------------------ resume

    def resume(self) -> bool:
        """Load the latest checkpoint in the output folder, else `training.load`. True if loaded.

        A checkpoint of another stage starts this stage from it (see the module docstring)."""
        t = self.recipe.training
        folder = self.ckpt.latest()
        if folder is None:
            if t.load is None:
                return False
            folder = resolve_load_path(t.load)
        with reading(folder):  # another run's retention leaves it alone meanwhile
            saved = self.engine.load(folder)
        if saved.get("weights_only"):  # e.g. imported from HF: weights only, the run starts at step 0
            self.logger.event(0, f"initialised weights from {folder} ({saved.get('source', 'import')})")
            return True
        state = TrainerState.from_dict(saved, str(folder))
        previous = state.extra.get("stage") or {"name": "main", "start_step": 0, "start_samples": 0, "start_tokens": 0}
        data_state = state.extra.get("data")
        if data_state is not None:
            data_state = load_data_state(data_state, folder)
        self.state = state
        if previous["name"] == t.stage:
            change = None
            if data_state is not None and hasattr(self.train_data, "load_state_dict"):
                change = self.train_data.load_state_dict(data_state)
            if "hooks" in state.extra:
                self.hooks.load_state_dict(state.extra["hooks"], str(folder))
            self._context()
            self.logger.event(self.state.step, f"resumed from {folder} at {trainer_state_summary(saved)}")
            if change:
                self._log_recipe_change(change)
            return True
        # a new stage: counters and optimizer carry on, data and hooks start this stage's way
        state.extra = {"stage": self._stage_record(state.step, state.consumed_samples, state.consumed_tokens),
                       "previous_stage": previous["name"]}
        carried = {}
        if data_state is not None and hasattr(self.train_data, "continue_from"):
            carried = self.train_data.continue_from(data_state)
        self._context()
        self.logger.event(
            self.state.step,
            f"stage {t.stage!r} starts from stage {previous['name']!r} ({folder}) at {trainer_state_summary(saved)}; "
            f"streams carried on: {carried or 'none'}",
            previous_stage=previous["name"], carried_streams=carried,
        )
        return True

    def _log_recipe_change(self, change: dict[str, Any]) -> None:
        """The `recipe_change` event: what the resumed recipe changed, and where each edited stream resumes."""
        if change["at_sample"] != self.data_position:
            raise ValueError(f"data state ends at sample {change['at_sample']} of the stage, the checkpoint at "
                             f"{self.data_position}: the checkpoint is inconsistent")
        parts = [f"{k} {change[k]}" for k in ("added", "dropped") if change.get(k)]
        parts += [f"changed {sorted(change['changed'])}"] if change.get("changed") else []
        share = lambda w: "-" if w is None else f"{w:.4g}"  # noqa: E731
        weights = ", ".join(f"{n}: {share(a)} -> {share(b)}" for n, (a, b) in change.get("weights", {}).items())
        parts += [f"weights {{{weights}}}"] if weights else []
        parts = parts or ["streams reordered"]
        self.logger.event(self.state.step, f"recipe change at step {self.state.step}: " + "; ".join(parts),
                          recipe_change=change)
        self._log_data()

    # ------------------------------------------------------------------ the loop

    def train(self) -> TrainerState:
        """Run the stage to its last step. RecipeError (before any step) when `schedule.stable_tokens: null`
        leaves no room for warmup and decay in this stage."""
        t = self.recipe.training
        self.recipe = resolve_schedule(self.recipe, self.stage["start_tokens"], self.stage_steps * self.tokens_per_step)
        self.logger.write_file("recipe.yaml", yaml.safe_dump(recipe_to_dict(self.recipe), sort_keys=False))
        self.logger.event(
            self.state.step,
            f"stage {t.stage!r}: steps {self.state.step}..{self.total_steps} of {self.tokens_per_step} tokens "
            f"({self.engine.num_parameters / 1e6:.2f}M parameters, world {self.layout.world_size}, "
            f"dp {self.layout.dp_size})",
        )
        self._log_data()
        self._apply_weights(self.hooks.train_start())
        if t.eval_at_start and self.has_validation and self.state.step == self.stage["start_step"]:
            self._apply_weights(self.hooks.eval(self.state.step, self.evaluate()))
        window_tokens, window_start = 0, time.perf_counter()
        while self.state.step < self.total_steps:
            lr = wsd_lr(self.recipe.schedule, self.state.consumed_tokens)
            first = self.data_position
            try:
                self.train_data.prepare_step(first, first + t.global_batch_size)
            except StreamExhausted as exc:
                folder = self.save()
                raise TrainingStopped(f"{exc}; the last complete step is saved in {folder}") from exc
            batches = self._micro_batches(self.train_data, first)
            t0 = time.perf_counter()
            result = self.engine.train_step(batches, self.num_micro_batches, lr)
            self.train_seconds += time.perf_counter() - t0
            self._account(result)
            self._context()
            window_tokens += result.tokens
            step = self.state.step
            if step % t.log_every == 0 or step == self.total_steps:
                elapsed = time.perf_counter() - window_start
                self._log_train(result, lr, window_tokens / max(elapsed, 1e-9))
                window_tokens, window_start = 0, time.perf_counter()
            weights = self.hooks.step_end(step, {"loss": result.loss, "grad_norm": result.grad_norm, "lr": lr,
                                                 "skipped": result.skipped})
            self._apply_weights(weights)
            if self.has_validation and t.eval_every and step % t.eval_every == 0:
                self._apply_weights(self.hooks.eval(step, self.evaluate()))
            if t.save_every and step % t.save_every == 0 and step < self.total_steps:
                self.save(wait=False)  # an asynchronous engine keeps training while it writes
            self.engine.finish_saves(blocking=False)
        if self.has_validation and not (t.eval_every and self.state.step % t.eval_every == 0):
            self._apply_weights(self.hooks.eval(self.state.step, self.evaluate()))
        self.save()
        self.logger.event(
            self.state.step,
            f"stage {t.stage!r} done: {self.train_seconds:.1f} s in training steps, {self.eval_seconds:.1f} s in "
            f"validation, {self.hooks.seconds * 1e3:.1f} ms in data hooks ({self.hooks.updates} mixture updates)",
            train_seconds=self.train_seconds, eval_seconds=self.eval_seconds, hook_seconds=self.hooks.seconds,
            mixture_updates=self.hooks.updates,
        )
        return self.state

    @property
    def has_validation(self) -> bool:
        return self.valid_data is not None or bool(self.valid_streams)

    def _account(self, result: StepResult) -> None:
        t = self.recipe.training
        self.state.step += 1
        # A skipped step still consumes its batch: the bad batch is not retried.
        self.state.consumed_samples += t.global_batch_size
        self.state.consumed_tokens += self.tokens_per_step
        if not result.skipped:
            self.state.consecutive_skips = 0
            return
        self.state.skipped_steps += 1
        self.state.consecutive_skips += 1
        message = (
            f"step {self.state.step}: non-finite loss ({result.loss}) or gradient norm; "
            f"parameters left unchanged"
        )
        if t.nan_policy == "stop":
            self.logger.event(self.state.step, message + "; stopping (training.nan_policy=stop)")
            raise TrainingStopped(message + " (training.nan_policy=stop); no checkpoint written")
        self.logger.event(self.state.step, message + "; batch skipped (training.nan_policy=skip)")
        if self.state.consecutive_skips > t.max_skipped_steps:
            raise TrainingStopped(
                f"{self.state.consecutive_skips} steps in a row skipped for non-finite values "
                f"(training.max_skipped_steps={t.max_skipped_steps}); stopping"
            )

    def _log_train(self, result: StepResult, lr: float, tokens_per_s: float) -> None:
        s = self.state
        tflops = tokens_per_s * self.flops_per_token / 1e12
        figures = {
            "loss": result.loss,
            "lr": lr,
            "grad_norm": result.grad_norm,
            "tokens_per_s": tokens_per_s,
            "tflops": tflops,
            "consumed_tokens": s.consumed_tokens,
            "skipped": result.skipped,
            "phase": phase(self.recipe.schedule, s.consumed_tokens),
        }
        line = (
            f"step {s.step}/{self.total_steps} | loss {result.loss:.4f} | lr {lr:.3e} | "
            f"grad_norm {result.grad_norm:.3f} | {tokens_per_s:,.0f} tok/s | {tflops:.3f} TFLOP/s | "
            f"tokens {s.consumed_tokens:,}"
        )
        self.logger.log("train", s.step, figures, line)

    def _loss_over(self, source: SampleSource, global_batches: int) -> tuple[float, int]:
        """Token-summed loss and tokens over the first `global_batches` global batches of `source`
        (the same batches at every evaluation, on all ranks)."""
        gbs = self.recipe.training.global_batch_size
        loss_sum, tokens = 0.0, 0
        for b in range(global_batches):
            ls, n = self.engine.evaluate(self._micro_batches(source, b * gbs), self.num_micro_batches)
            loss_sum += ls
            tokens += n
        return loss_sum, tokens

    def evaluate(self) -> EvalMetrics:
        """Validation over `data.valid_blend` (`eval_batches` global batches) and every stream's
        held-out documents (`eval_batches_per_stream` each). Without a valid_blend the overall loss is
        the token-weighted loss over the streams' held-out batches."""
        t = self.recipe.training
        streams: dict[str, dict[str, float]] = {}
        total_loss, total_tokens = 0.0, 0
        started = time.perf_counter()
        for name, source in self.valid_streams.items():
            t0 = time.perf_counter()
            ls, n = self._loss_over(source, t.eval_batches_per_stream)
            loss = ls / max(n, 1)
            streams[name] = {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": n,
                             "seconds": time.perf_counter() - t0}
            total_loss, total_tokens = total_loss + ls, total_tokens + n
        if self.valid_data is not None:
            total_loss, total_tokens = self._loss_over(self.valid_data, t.eval_batches)
        loss = total_loss / max(total_tokens, 1) if total_tokens else None
        ppl = math.exp(min(loss, 50.0)) if loss is not None else None
        figures: dict[str, Any] = {"loss": loss, "ppl": ppl, "tokens": total_tokens,
                                   "seconds": time.perf_counter() - started,
                                   "overall_of": "valid_blend" if self.valid_data is not None else "streams"}
        self.eval_seconds += figures["seconds"]
        if streams:
            figures["streams"] = streams
        per_stream = " | ".join(f"{k} {v['ppl']:.2f}" for k, v in streams.items())
        self.logger.log(
            "eval", self.state.step, figures,
            f"eval step {self.state.step} | loss {loss:.4f} | ppl {ppl:.3f}" + (f" | ppl by stream: {per_stream}" if streams else ""),
        )
        self._log_data()
        return EvalMetrics(step=self.state.step, consumed_tokens=self.state.consumed_tokens, loss=loss, ppl=ppl,
                           streams=streams)

    def save(self, wait: bool = True) -> Path:
        """Checkpoint the current step. The engine may write in the background (`wait=False`): the
        checkpoint is committed (COMPLETE, `latest`, retention) once its files are written, at a
        later step boundary (`engine.finish_saves`) or before the next save."""
        if not self.engine.parameters_finite():
            raise TrainingStopped(
                f"step {self.state.step}: parameters hold non-finite values; refusing to write a checkpoint"
            )
        bits: dict[str, Any] = {}  # the data state's bitmaps: a binary file beside the trainer state
        if hasattr(self.train_data, "state_dict"):  # ledgers only where the trainer state is written
            data = self.train_data.state_dict(ledgers=self.layout.is_logging_rank)
            self.state.extra["data"], bits = split_bits(data)
        if self.hooks:
            self.state.extra["hooks"] = self.hooks.state_dict()
        state = self.state.to_dict()
        state["layout"] = self.engine.layout_key()
        state["recipe"] = recipe_to_dict(self.recipe)
        step = self.state.step
        self.engine.finish_saves(blocking=True)  # the previous save commits before this one begins
        folder = self.ckpt.begin(step)

        def committed() -> None:
            if bits and self.layout.is_logging_rank:
                write_bits(folder / BITS_FILE, bits)
            final = self.ckpt.commit(step)
            self.logger.event(self.state.step, f"saved checkpoint {final}", checkpoint_step=step)

        self.engine.save(folder, state, on_written=committed)
        if wait:
            self.engine.finish_saves(blocking=True)
        return self.ckpt.root / step_dir_name(step)
