"""The training loop: steps, tokens, learning rate, logging, evaluation, checkpoints, resume.

It drives any `cpt.train.engine.Engine` and reads samples by global index from an indexable
dataset, so the data position is the consumed-sample count and every rank derives its slice of a
global batch without talking to the others. Resume restores model, optimizer, RNG and counters and
continues with the very batches an uninterrupted run would have seen.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Protocol, Sequence

import numpy as np

from cpt.config import Recipe, recipe_to_dict
from cpt.sampling.errors import StreamExhausted
from cpt.sampling.parallel import DataParallelLayout
from cpt.train.checkpoint import CheckpointManager, resolve_load_path, trainer_state_summary
from cpt.train.engine import Batch, Engine, StepResult
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
    ) -> None:
        self.recipe = recipe
        self.engine = engine
        self.train_data = train_data
        self.valid_data = valid_data
        t = recipe.training
        self.layout = engine.layout
        self.samples_per_rank = t.global_batch_size // self.layout.dp_size
        self.num_micro_batches = self.samples_per_rank // t.micro_batch_size
        self.dp_layout = DataParallelLayout(
            global_batch_size=t.global_batch_size, micro_batch_size=t.micro_batch_size, dp_size=self.layout.dp_size
        )
        self.tokens_per_step = t.global_batch_size * t.seq_length
        self.total_steps = math.ceil(t.train_tokens / self.tokens_per_step)
        self.output_dir = Path(t.output_dir)
        self.ckpt = CheckpointManager(self.output_dir / "checkpoints", self.layout.is_logging_rank, engine.barrier)
        self.logger = logger or MetricsLogger(self.output_dir, self.layout.is_logging_rank, t.tensorboard)
        self.state = TrainerState()
        self.flops_per_token = model_flops_per_token(
            engine.num_parameters, recipe.model.num_layers, recipe.model.hidden_size, t.seq_length
        )

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
        """Load `training.load`, or the latest checkpoint in the output folder. True if loaded."""
        t = self.recipe.training
        if t.load is not None:
            folder = resolve_load_path(t.load)
        else:
            folder = self.ckpt.latest()
            if folder is None:
                return False
        saved = self.engine.load(folder)
        if saved.get("weights_only"):  # e.g. imported from HF: weights only, the run starts at step 0
            self.logger.event(0, f"initialised weights from {folder} ({saved.get('source', 'import')})")
            return True
        self.state = TrainerState.from_dict(saved, str(folder))
        data_state = self.state.extra.get("data")
        if data_state is not None and hasattr(self.train_data, "load_state_dict"):
            self.train_data.load_state_dict(data_state)
        self.logger.event(self.state.step, f"resumed from {folder} at {trainer_state_summary(saved)}")
        return True

    # ------------------------------------------------------------------ the loop

    def train(self) -> TrainerState:
        t = self.recipe.training
        self.logger.event(
            self.state.step,
            f"training {self.total_steps} steps of {self.tokens_per_step} tokens "
            f"({self.engine.num_parameters / 1e6:.2f}M parameters, world {self.layout.world_size}, "
            f"dp {self.layout.dp_size})",
        )
        window_tokens, window_start = 0, time.perf_counter()
        while self.state.step < self.total_steps:
            lr = wsd_lr(self.recipe.schedule, self.state.consumed_tokens)
            first = self.state.consumed_samples
            try:
                self.train_data.prepare_step(first, first + t.global_batch_size)
            except StreamExhausted as exc:
                folder = self.save()
                raise TrainingStopped(f"{exc}; the last complete step is saved in {folder}") from exc
            batches = self._micro_batches(self.train_data, first)
            result = self.engine.train_step(batches, self.num_micro_batches, lr)
            self._account(result)
            window_tokens += result.tokens
            step = self.state.step
            if step % t.log_every == 0 or step == self.total_steps:
                elapsed = time.perf_counter() - window_start
                self._log_train(result, lr, window_tokens / max(elapsed, 1e-9))
                window_tokens, window_start = 0, time.perf_counter()
            if self.valid_data is not None and t.eval_every and step % t.eval_every == 0:
                self.evaluate()
            if t.save_every and step % t.save_every == 0 and step < self.total_steps:
                self.save()
        if self.valid_data is not None and not (t.eval_every and self.state.step % t.eval_every == 0):
            self.evaluate()
        self.save()
        return self.state

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

    def evaluate(self) -> Optional[float]:
        """Validation loss over the same `eval_batches` global batches every time."""
        if self.valid_data is None:
            return None
        t = self.recipe.training
        loss_sum, tokens = 0.0, 0
        for b in range(t.eval_batches):
            batches = self._micro_batches(self.valid_data, b * t.global_batch_size)
            ls, n = self.engine.evaluate(batches, self.num_micro_batches)
            loss_sum += ls
            tokens += n
        loss = loss_sum / max(tokens, 1)
        ppl = math.exp(min(loss, 50.0))
        self.logger.log(
            "eval", self.state.step, {"loss": loss, "ppl": ppl, "tokens": tokens},
            f"eval step {self.state.step} | loss {loss:.4f} | ppl {ppl:.3f}",
        )
        return loss

    def save(self) -> Path:
        if not self.engine.parameters_finite():
            raise TrainingStopped(
                f"step {self.state.step}: parameters hold non-finite values; refusing to write a checkpoint"
            )
        if hasattr(self.train_data, "state_dict"):
            self.state.extra["data"] = self.train_data.state_dict()
        state = self.state.to_dict()
        state["layout"] = self.engine.layout_key()
        state["recipe"] = recipe_to_dict(self.recipe)
        folder = self.ckpt.save(self.state.step, lambda d: self.engine.save(d, state))
        self.logger.event(self.state.step, f"saved checkpoint {folder}")
        return folder
