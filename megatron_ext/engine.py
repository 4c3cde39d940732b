"""megatron-core implementation of `cpt.train.engine.Engine`.

Parallel state (TP, PP, DP), megatron DDP with the distributed optimizer, AdamW, the pipeline
schedule from `get_forward_backward_func()`, per-token loss averaged over the whole global batch
(so every layout computes the same number), and distributed checkpoints that reshard across TP/PP.
The device is `training.device` resolved by `megatron_ext.device` (never a silent CPU fallback);
on the CPU `megatron_ext.cpu` redirects megatron's CUDA assumptions and the gloo backend is used.
"""
from __future__ import annotations

import datetime
import json
import math
import os
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist

from megatron_ext import cpu, device

cpu.enable()

from megatron.core import dist_checkpointing, parallel_state  # noqa: E402
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig  # noqa: E402
from megatron.core.distributed.finalize_model_grads import finalize_model_grads  # noqa: E402
from megatron.core.dist_checkpointing.mapping import ShardedObject  # noqa: E402
from megatron.core.optimizer import OptimizerConfig as MegatronOptimizerConfig  # noqa: E402
from megatron.core.optimizer import get_megatron_optimizer  # noqa: E402
from megatron.core.pipeline_parallel import get_forward_backward_func  # noqa: E402
from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed  # noqa: E402

from cpt.config import Recipe  # noqa: E402
from cpt.io import write_json_atomic  # noqa: E402
from cpt.train.engine import Batch, Layout, StepResult  # noqa: E402
from megatron_ext import compat, determinism, features  # noqa: E402
from megatron_ext.attention_mask import pack_documents  # noqa: E402
from megatron_ext.batches import BatchPlan, TensorParallelBatches  # noqa: E402
from megatron_ext.model import build_model, init_weights, kernel_summary  # noqa: E402

compat.apply()

TRAINER_STATE_FILE = "trainer_state.json"
# trainer_state.json's record of the form the distributed optimizer's state was saved in
# (parallel.optimizer_checkpoint): a checkpoint is loaded in its own form, whatever the run saves in.
OPTIMIZER_FORM_KEY = "optimizer_checkpoint"
# The form of checkpoints that predate the record: every save was fully reshardable then.
UNRECORDED_OPTIMIZER_FORM = "fully_reshardable"


def optimizer_checkpoint_metadata(form: str) -> dict[str, str]:
    """megatron's `sharded_state_dict` metadata for a form (0.16's own default,
    fully_sharded_model_space, refuses the flattened ranges our ShardedTensors carry)."""
    return {"distrib_optim_sharding_type": form}


def check_optimizer_resharding(directory: Path, form: str, saved: Optional[dict], layout: dict) -> None:
    """Refuse, in one line, to load a dp_reshardable optimizer under another TP or PP: megatron
    would fail deep in dist_checkpointing, or map the buckets wrongly. A layout change in DP only
    is what that form supports; a checkpoint without a recorded layout is not judged."""
    if form != "dp_reshardable" or not saved or all(saved.get(k) == layout.get(k) for k in ("tp", "pp")):
        return
    was = " ".join(f"{k.upper()}={saved.get(k)}" for k in ("tp", "pp"))
    now = " ".join(f"{k.upper()}={layout.get(k)}" for k in ("tp", "pp"))
    raise ValueError(
        f"{directory}: its optimizer state is saved dp_reshardable at {was}; this run is {now}. That form "
        f"resumes with another DP only: resume at {was}, and set parallel.optimizer_checkpoint: "
        f"fully_reshardable there so that the next checkpoint can change TP/PP; or start from its weights "
        f"alone with a fresh optimizer (cpt convert mcore-to-hf, then hf-to-mcore)"
    )


def init_distributed(timeout_minutes: int = 30, choice: device.DeviceChoice | None = None) -> None:
    """Join the torchrun world (or make a world of one). gloo on CPU, nccl on GPU; without a
    `choice` (tools and tests), the GPU when torch sees one."""
    if dist.is_initialized():
        return
    backend = choice.backend if choice is not None else ("gloo" if cpu.cuda_absent() else "nccl")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    timeout = datetime.timedelta(minutes=timeout_minutes)
    if "RANK" in os.environ:  # under torchrun (or any env:// launcher)
        dist.init_process_group(backend=backend, timeout=timeout)
        return
    # A world of one, set up without writing RANK/MASTER_PORT into os.environ: child processes
    # (workers, tools, tests) inherit the environment and must not take this world for theirs. Its
    # store lives in this process: no port, so runs started side by side (a sweep) cannot race for
    # one (a port probed free can be taken before it is bound).
    dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)


def _dtype(recipe: Recipe, on_cpu: bool) -> torch.dtype:
    if recipe.training.precision == "bf16" and not on_cpu:
        return torch.bfloat16
    return torch.float32  # bf16 matmuls on CPU are slow and not what CPU runs are for (said in the first line)


def _choose_device(recipe: Recipe) -> device.DeviceChoice:
    choice = device.resolve(recipe.training.device, int(os.environ.get("LOCAL_RANK", 0)))
    if choice.kind == "cpu":
        cpu.enable(force=True)
    return choice


class MegatronEngine:
    """One process's share of a megatron-core model, its optimizer and checkpoints."""

    def __init__(self, recipe: Recipe, async_save: Optional[bool] = None, spread_saves: bool = True) -> None:
        """`async_save`: write checkpoints in the background (default: on GPU only). `spread_saves`:
        share the writing of what every data-parallel rank holds alike (the weights) among them;
        off, data-parallel rank 0 writes all of it (benchmarks compare the two)."""
        self.device_choice = _choose_device(recipe)
        # before the process group: NCCL and cuBLAS read their settings when first initialised
        self._determinism = determinism.enable() if recipe.training.deterministic else None
        init_distributed(choice=self.device_choice)
        self.recipe = recipe
        par = recipe.parallel
        world = dist.get_world_size()
        dp = recipe.check_world_size(world)
        parallel_state.destroy_model_parallel()
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=par.tensor_model_parallel_size,
            pipeline_model_parallel_size=par.pipeline_model_parallel_size,
        )
        seed = recipe.training.seed
        # megatron's convention: a different seed per pipeline stage for dropout; init is separate.
        model_parallel_cuda_manual_seed(seed + 100 * parallel_state.get_pipeline_model_parallel_rank())
        torch.manual_seed(seed)
        on_cpu = self.device_choice.kind == "cpu"
        self.device = torch.device("cpu") if on_cpu else torch.device("cuda", torch.cuda.current_device())
        self.dtype = _dtype(recipe, on_cpu)
        self.async_save = (not on_cpu) if async_save is None else async_save
        # without the distributed optimizer the state is per parameter: reshardable any way
        self.optimizer_form = par.optimizer_checkpoint if par.use_distributed_optimizer else "fully_reshardable"
        self._async_queue = None
        self.spread_saves = spread_saves
        self.layout = Layout(
            rank=dist.get_rank(),
            world_size=world,
            dp_rank=parallel_state.get_data_parallel_rank(),
            dp_size=dp,
            is_logging_rank=dist.get_rank() == 0,
        )
        self.pre_process = parallel_state.is_pipeline_first_stage()
        self.post_process = parallel_state.is_pipeline_last_stage()
        self.batches = self._batches()
        self._build()

    # ------------------------------------------------------------------ building

    def _batches(self) -> TensorParallelBatches:
        r = self.recipe
        plan = BatchPlan.for_stage(
            first_stage=self.pre_process, last_stage=self.post_process,
            tp_rank=parallel_state.get_tensor_model_parallel_rank(),
            document_masking=r.data.reset_attention_mask,
            micro_batch_size=r.training.micro_batch_size, seq_length=r.training.seq_length,
        )
        return TensorParallelBatches(plan, self.device, parallel_state.get_tensor_model_parallel_group(),
                                     parallel_state.get_tensor_model_parallel_src_rank(),
                                     parallel_state.get_tensor_model_parallel_world_size())

    def _build(self) -> None:
        r = self.recipe
        model = build_model(
            r.model, r.parallel, self.dtype, r.training.seq_length,
            pre_process=self.pre_process, post_process=self.post_process, deterministic=r.training.deterministic,
        )
        init_weights(
            model, r.model,
            tp_rank=parallel_state.get_tensor_model_parallel_rank(),
            tp_size=r.parallel.tensor_model_parallel_size,
            seed=r.training.seed,
        )
        model.to(self.device)
        ddp_config = DistributedDataParallelConfig(
            grad_reduce_in_fp32=True,
            overlap_grad_reduce=r.parallel.overlap_grad_reduce,
            use_distributed_optimizer=r.parallel.use_distributed_optimizer,
            bucket_size=None if self.device.type == "cpu" else 40_000_000,
        )
        self.model = DistributedDataParallel(config=model.config, ddp_config=ddp_config, module=model)
        self.model_chunks = [self.model]
        o = r.optimizer
        self.optimizer = get_megatron_optimizer(
            MegatronOptimizerConfig(
                optimizer="adam",
                lr=r.schedule.lr_max,
                min_lr=r.schedule.lr_min,
                weight_decay=o.weight_decay,
                adam_beta1=o.adam_beta1,
                adam_beta2=o.adam_beta2,
                adam_eps=o.adam_eps,
                clip_grad=o.clip_grad,
                bf16=self.dtype == torch.bfloat16,
                params_dtype=self.dtype,
                use_distributed_optimizer=r.parallel.use_distributed_optimizer,
            ),
            self.model_chunks,
        )
        compat.prefer_foreach_adam(self.optimizer)
        config = model.config
        config.no_sync_func = self.model.no_sync
        config.grad_sync_func = None
        config.finalize_model_grads_func = finalize_model_grads
        local = sum(p.numel() for p in model.parameters())
        total = torch.tensor([local], dtype=torch.int64, device=self.device)  # nccl needs device tensors
        dist.all_reduce(total, group=parallel_state.get_model_parallel_group())
        self.num_parameters = int(total.item())
        self.features = features.summary()
        self.start_info = self._start_info(model.config)

    def _start_info(self, config) -> dict[str, Any]:
        kernels = kernel_summary(self.recipe.model, config)
        fused = [k for k, on in kernels["fusions"].items() if on]
        dtype = str(self.dtype).replace("torch.", "")
        note = ""
        if self.recipe.training.precision == "bf16" and self.dtype != torch.bfloat16:
            note = " (training.precision=bf16 runs in fp32 on the CPU)"
        line = (f"{self.device_choice.reason}; {dtype}{note}, {self.device_choice.backend}; "
                f"{kernels['spec']} spec, attention: {kernels['attention']}; "
                f"fusions: {', '.join(fused) or 'none'}; loss: {kernels['loss']}; "
                f"{'deterministic kernels; ' if self._determinism else ''}"
                f"{self.batches.plan.describe(self.batches.tp_size, self.batches.pinned)}")
        return {"line": line, "device": self.device_choice.kind, "dtype": dtype,
                "deterministic": self._determinism is not None,
                "backend": self.device_choice.backend, **kernels,
                "batches": {"pinned": self.batches.pinned, "reads": self.batches.plan.reads,
                            "fields": list(self.batches.plan.keys), "tp_size": self.batches.tp_size}}

    # ------------------------------------------------------------------ steps

    def _forward_step(self, data_iterator: Iterator[Batch], model: torch.nn.Module):
        # TP rank 0 of a stage reads and broadcasts; a stage gets only the fields it uses (None else)
        batch = self.batches.next(data_iterator)
        batch, packed = pack_documents(batch, self.recipe.parallel.pipeline_model_parallel_size)
        output = model(batch.get("tokens"), batch.get("position_ids"), None, labels=batch.get("labels"),
                       packed_seq_params=packed)
        return output, partial(self._loss, batch.get("loss_mask"))

    @staticmethod
    def _loss(loss_mask: torch.Tensor, output: torch.Tensor):
        losses = output.float().view(-1)
        mask = loss_mask.view(-1)
        loss_sum = torch.sum(losses * mask)
        num_tokens = mask.sum().to(torch.int)
        report = torch.stack([loss_sum.detach(), num_tokens.detach().float()])
        return loss_sum, num_tokens, {"lm loss": report}

    def _run(self, micro_batches: Iterator[Batch], num_micro_batches: int, forward_only: bool):
        r = self.recipe
        return get_forward_backward_func()(
            forward_step_func=self._forward_step,
            data_iterator=micro_batches,
            model=self.model_chunks,
            num_microbatches=num_micro_batches,
            seq_length=r.training.seq_length,
            micro_batch_size=r.training.micro_batch_size,
            forward_only=forward_only,
        )

    def _step_scalars(self, losses_reduced: list[dict], check_grads: bool) -> tuple[float, int, bool]:
        """(token-summed loss, tokens, all gradients finite) over the global batch, identical on
        every rank, from ONE all-reduce and ONE device-to-host transfer.

        Each rank contributes [loss sum, tokens, non-finite flag]: the loss only from the first
        tensor-parallel rank of the last pipeline stage (TP ranks hold the same loss, other stages
        none), so a world-wide sum is the sum over data-parallel replicas; the flag counts ranks
        whose gradients hold a NaN/inf."""
        local = torch.zeros(3, dtype=torch.float64, device=self.device)
        if self.post_process and parallel_state.get_tensor_model_parallel_rank() == 0 and losses_reduced:
            local[:2] = torch.stack([item["lm loss"].detach() for item in losses_reduced]).to(torch.float64).sum(0)
        if check_grads:
            local[2] = (~self._local_grads_finite()).to(torch.float64)
        dist.all_reduce(local)
        loss_sum, tokens, bad = local.tolist()
        return loss_sum, int(tokens), bad == 0

    def _local_grads_finite(self) -> torch.Tensor:
        """One fused check on the device: min and max of every flat gradient buffer (one read-only
        pass each, no converted copy, no overflow as a sum could have) are all finite exactly when
        every gradient is (a NaN propagates into both)."""
        extremes = [
            torch.stack(torch.aminmax(buffer.grad_data))
            for buffer in [*self.model.buffers, *getattr(self.model, "expert_parallel_buffers", [])]
            if buffer.grad_data.numel()
        ]
        if not extremes:
            return torch.ones((), dtype=torch.bool, device=self.device)
        return torch.isfinite(torch.cat(extremes)).all()

    def train_step(self, micro_batches: Iterator[Batch], num_micro_batches: int, lr: float) -> StepResult:
        self.model.zero_grad_buffer()
        self.optimizer.zero_grad()
        losses = self._run(micro_batches, num_micro_batches, forward_only=False)
        loss_sum, tokens, grads_finite = self._step_scalars(losses, check_grads=True)
        loss = loss_sum / max(tokens, 1)
        if not math.isfinite(loss) or not grads_finite:
            return StepResult(loss=loss, grad_norm=float("nan"), tokens=tokens, skipped=True)
        # megatron's own OptimizerParamScheduler sets both per group: norms and biases sit in a
        # group with wd_mult 0, and lr_mult lets a recipe scale parts of the model.
        wd = self.recipe.optimizer.weight_decay
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
            group["weight_decay"] = wd * group.get("wd_mult", 1.0)
        ok, grad_norm, _ = self.optimizer.step()  # megatron's clipping reads its norm on the host itself
        grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
        return StepResult(loss=loss, grad_norm=grad_norm, tokens=tokens, skipped=not ok)

    @torch.no_grad()
    def evaluate(self, micro_batches: Iterator[Batch], num_micro_batches: int) -> tuple[float, int]:
        for chunk in self.model_chunks:
            chunk.eval()
        try:
            losses = self._run(micro_batches, num_micro_batches, forward_only=True)
        finally:
            for chunk in self.model_chunks:
                chunk.train()
        loss_sum, tokens, _ = self._step_scalars(losses, check_grads=False)
        return loss_sum, tokens

    @torch.no_grad()
    def logits(self, tokens: np.ndarray) -> torch.Tensor | None:
        """Full-vocabulary logits [b, s, vocab] on the CPU for a token batch (single stage only; tests
        and conversion checks). Gathers the TP vocabulary shards and drops the vocabulary padding."""
        if not (self.pre_process and self.post_process):
            raise RuntimeError("logits() needs the whole model on one pipeline stage")
        from megatron.core.tensor_parallel.mappings import gather_from_tensor_model_parallel_region

        t = torch.from_numpy(np.asarray(tokens)).long().to(self.device)
        pos = torch.arange(t.shape[1], device=self.device).unsqueeze(0).expand_as(t)
        module = self.model.module
        module.eval()
        try:
            out = module(t, pos, None)  # [b, s, vocab/tp]
        finally:
            module.train()
        out = gather_from_tensor_model_parallel_region(out)
        return out[..., : self.recipe.model.vocab_size].float().cpu()

    def parameters_finite(self) -> bool:
        ok = torch.ones(1, device=self.device)
        for p in self.model.parameters():
            if not torch.isfinite(p).all():
                ok.zero_()
                break
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        return bool(ok.item())

    # ------------------------------------------------------------------ checkpoints

    def _rng_state(self) -> ShardedObject:
        pp = parallel_state.get_pipeline_model_parallel_rank()
        tp = parallel_state.get_tensor_model_parallel_rank()
        dp = parallel_state.get_data_parallel_rank()
        state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state()
        from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

        state["tracker"] = get_cuda_rng_tracker().get_states()
        r = self.recipe.parallel
        return ShardedObject(
            "rng_state",
            state,
            (r.pipeline_model_parallel_size, r.tensor_model_parallel_size, self.layout.dp_size),
            (pp, tp, dp),
            replica_id=0,
        )

    def _sharded_state_dict(self, is_loading: bool, optimizer_form: Optional[str]) -> dict:
        """The model's sharded state, and the optimizer's in `optimizer_form` (None: weights only)."""
        model_sd = self.model.module.sharded_state_dict()
        if optimizer_form is None:
            return {"model": model_sd}
        if is_loading:
            self._ensure_optimizer_state()
        return {
            "model": model_sd,
            "optimizer": self.optimizer.sharded_state_dict(
                model_sd, is_loading=is_loading, metadata=optimizer_checkpoint_metadata(optimizer_form)
            ),
        }

    def _ensure_optimizer_state(self) -> None:
        # DistributedOptimizer.sharded_state_dict(is_loading=True) describes the optimizer state
        # tensors it expects; torch's AdamW creates them lazily at the first step, so a freshly
        # built optimizer has none. Create zero state (megatron's own helper) before asking.
        for opt in getattr(self.optimizer, "chained_optimizers", [self.optimizer]):
            init = getattr(opt, "_init_optimizer_states_with_dummy_values", None)
            if init is not None and not opt.optimizer.state:
                init()

    def save(self, directory: Path, trainer_state: dict[str, Any],
             on_written: Optional[Callable[[], None]] = None) -> None:
        """Write a dist checkpoint into `directory`, then call `on_written()` on every rank (the
        checkpoint manager's commit). With `async_save` (on GPU) the shards are copied to host
        memory here and written by a background process while training goes on; `on_written` then
        runs from `finish_saves`, after every rank's shards are on disk.
        `trainer_state["weights_only"]` (imports from HF) leaves out the optimizer and RNG: a run
        started from it begins at step 0 with a fresh optimizer."""
        directory = Path(directory)
        self.finish_saves(blocking=True)  # one save in flight at a time
        if self.layout.rank == 0:
            directory.mkdir(parents=True, exist_ok=True)
        self.barrier()
        weights_only = bool(trainer_state.get("weights_only"))
        form = None if weights_only else self.optimizer_form
        sd = self._sharded_state_dict(is_loading=False, optimizer_form=form)
        if not weights_only:
            sd["rng_state"] = self._rng_state()
            trainer_state = {**trainer_state, OPTIMIZER_FORM_KEY: form}
        request = dist_checkpointing.save(sd, str(directory), sharded_strategy=self._save_strategy(),
                                          async_sharded_save=self.async_save, **compat.dist_save_options())
        if self.layout.rank == 0:
            write_json_atomic(directory / TRAINER_STATE_FILE, trainer_state, indent=1, sort_keys=True)
        if request is None:
            self.barrier()
            if on_written is not None:
                on_written()
            return
        if on_written is not None:
            request.add_finalize_fn(on_written)
        self._save_queue().schedule_async_request(request)

    def _save_strategy(self):
        """megatron's torch_dist writer; with DP > 1, wrapped so that the shards every data-parallel
        rank holds alike (the weights; all of a non-distributed optimizer) are written by one rank
        each, spread evenly (megatron's FullyParallelSaveStrategyWrapper, Megatron-LM's default
        --ckpt-fully-parallel-save). Unwrapped, data-parallel rank 0 writes every weight and each
        save lasts as long as that one writer. Only metadata is exchanged to plan it, at each save:
        the state's structure may change between saves (another optimizer form, weights only)."""
        from megatron.core.dist_checkpointing.serialization import get_default_save_sharded_strategy

        strategy = get_default_save_sharded_strategy()
        if not self.spread_saves or self.layout.dp_size == 1:
            return strategy
        from megatron.core.dist_checkpointing.strategies.fully_parallel import FullyParallelSaveStrategyWrapper

        group = parallel_state.get_data_parallel_group(with_context_parallel=True)
        return FullyParallelSaveStrategyWrapper(strategy, group, do_cache_distribution=False)

    def _load_strategy(self, directory: Path):
        """With training.fully_parallel_load and DP > 1: each shard that every data-parallel rank
        needs alike (the weights) is read from storage by one rank and sent to the others
        (megatron's FullyParallelLoadStrategyWrapper, Megatron-LM's --ckpt-fully-parallel-load), so a
        resume reads the checkpoint about once rather than DP times. None: megatron's reader, every
        rank reading all it needs."""
        if not self.recipe.training.fully_parallel_load or self.layout.dp_size == 1:
            return None
        from megatron.core.dist_checkpointing.serialization import get_default_load_sharded_strategy
        from megatron.core.dist_checkpointing.strategies.fully_parallel import FullyParallelLoadStrategyWrapper

        group = parallel_state.get_data_parallel_group(with_context_parallel=True)
        return FullyParallelLoadStrategyWrapper(get_default_load_sharded_strategy(str(directory)), group)

    def _save_queue(self):
        if self._async_queue is None:
            from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue

            self._async_queue = AsyncCallsQueue(persistent=False)
        return self._async_queue

    def finish_saves(self, blocking: bool = True) -> int:
        """Finalize (commit) asynchronous saves whose shards are all written; with `blocking`, wait
        for all. Collective: every rank calls it at the same point. Returns how many finished."""
        if self._async_queue is None or not self._async_queue.get_num_unfinalized_calls():
            return 0
        return len(self._async_queue.maybe_finalize_async_calls(blocking=blocking))

    def load(self, directory: Path, load_optimizer: bool = True, load_rng: bool = True) -> dict[str, Any]:
        directory = Path(directory)
        state_file = directory / TRAINER_STATE_FILE
        if not state_file.is_file():
            raise FileNotFoundError(f"{directory}: not a complete checkpoint (no {TRAINER_STATE_FILE})")
        trainer_state = json.loads(state_file.read_text())
        if trainer_state.get("weights_only"):
            load_optimizer = load_rng = False
        same_layout = trainer_state.get("layout", {}) == self.layout_key()
        form = trainer_state.get(OPTIMIZER_FORM_KEY, UNRECORDED_OPTIMIZER_FORM) if load_optimizer else None
        if form is not None:
            check_optimizer_resharding(directory, form, trainer_state.get("layout"), self.layout_key())
        sd = self._sharded_state_dict(is_loading=True, optimizer_form=form)
        if load_rng and same_layout:
            sd["rng_state"] = self._rng_state()
        loaded = dist_checkpointing.load(sd, str(directory), sharded_strategy=self._load_strategy(directory))
        with torch.no_grad():
            self._load_model(loaded["model"])
            if load_optimizer:
                compat.carry_schedule_into(loaded["optimizer"], self.optimizer)
                self.optimizer.load_state_dict(loaded["optimizer"])
                compat.unshare_adam_steps(self.optimizer)
                compat.prefer_foreach_adam(self.optimizer)
        if "rng_state" in loaded:
            rng = loaded["rng_state"]
            torch.set_rng_state(rng["torch"])
            np.random.set_state(rng["numpy"])
            if "cuda" in rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"])
            from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

            get_cuda_rng_tracker().set_states(rng["tracker"])
        return trainer_state

    def _load_model(self, state: dict) -> None:
        self.model.module.load_state_dict(state, strict=True)

    def layout_key(self) -> dict[str, int]:
        """The parallel layout recorded in checkpoints (RNG state is restored only on a match)."""
        r = self.recipe.parallel
        return {
            "tp": r.tensor_model_parallel_size,
            "pp": r.pipeline_model_parallel_size,
            "dp": self.layout.dp_size,
        }

    # ------------------------------------------------------------------ collectives

    def barrier(self) -> None:
        dist.barrier()

    def broadcast_object(self, obj: Any) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        self.finish_saves(blocking=True)
        if self._async_queue is not None:
            self._async_queue.close()
        if dist.is_initialized():
            dist.barrier()
            parallel_state.destroy_model_parallel()
            dist.destroy_process_group()
        if self._determinism is not None:
            determinism.restore(self._determinism)
            self._determinism = None
