"""Lets megatron-core run on CPU with the gloo backend, so tests, laptops and the demo run the very
engine the GPU cluster runs.

megatron-core assumes CUDA in a handful of places: it asks `torch.cuda` for the current device,
streams, events and RNG state, creates a few tensors with a hard-coded `device="cuda"`, and checks
`Tensor.type()` against `torch.cuda.*` names. `enable()` redirects exactly those, and only when CUDA
is absent: on a GPU machine it does nothing. Each patch names the megatron call that needs it.
Two more patches only save time on this path, with bit-identical results: collectives over a
one-rank group are skipped (gloo would copy the whole buffer), and the no-Apex gradient-clip scale
runs in place.

Verified with the megatron-core releases of `megatron_ext.compat.MEGATRON_CORE_RANGES` (TP, PP, DP
with the distributed optimizer, dist checkpointing); another version gets a warning, since the list
of CUDA assumptions may have changed.
"""
from __future__ import annotations

import contextlib
import importlib
import sys
import types
import warnings

import torch
import torch.distributed as dist

# megatron modules that create tensors with a hard-coded device="cuda" (or call torch.cuda.* at
# module level through `torch.`), and the call in each that needs the redirect.
_MODULES_WITH_CUDA_TENSORS = {
    # forward_backward_*: total_num_tokens = torch.zeros([], device="cuda")
    "megatron.core.pipeline_parallel.schedules": "total_num_tokens",
    # MixedPrecisionOptimizer / FP32Optimizer: found_inf, _scale_one, _dummy_overflow_buf
    "megatron.core.optimizer.optimizer": "found_inf",
    # get_grad_norm_fp32 / clip_grad_by_total_norm_fp32: total_norm_cuda, dummy_overflow_buf
    "megatron.core.optimizer.clip_grads": "total_norm_cuda",
    # ConstantGradScaler / DynamicGradScaler: _scale
    "megatron.core.optimizer.grad_scaler": "_scale",
    # _ParamAndGradBuffer: tmp_warmup_tensor (NCCL warm-up)
    "megatron.core.distributed.param_and_grad_buffer": "tmp_warmup_tensor",
    # get_attention_mask / causal masks built on device="cuda"
    "megatron.core.transformer.utils": "get_attention_mask",
    # save_preprocess verification all-reduce: all_results
    "megatron.core.dist_checkpointing.strategies.state_dict_saver": "all_results",
    # exchange of shards between ranks: init_data("cuda"), empty_like(device="cuda")
    "megatron.core.dist_checkpointing.exchange_utils": "exchange_by_distribution",
    # RerunStateMachine all-reduces and norm helpers
    "megatron.core.rerun_state_machine": "val_tensor",
    "megatron.core.utils": "l2_cuda",
    # broadcast_data: sizes_cuda
    "megatron.core.tensor_parallel.data": "sizes_cuda",
}

_enabled = False


def cuda_absent() -> bool:
    return not torch.cuda.is_available()


def active() -> bool:
    """True once `enable` has redirected megatron-core to the CPU."""
    return _enabled


def _to_cpu_device(device):
    if isinstance(device, str) and device.startswith("cuda"):
        return "cpu"
    if isinstance(device, torch.device) and device.type == "cuda":
        return torch.device("cpu")
    if isinstance(device, int):  # torch.cuda.current_device() used to return an index
        return "cpu"
    return device


class _CpuTorch(types.ModuleType):
    """Stands in for `torch` inside one megatron module: tensor factories get device cpu, the
    rest is torch itself. Hot paths (model forward/backward) never go through it."""

    _FACTORIES = frozenset(
        {"tensor", "zeros", "ones", "empty", "full", "arange", "zeros_like", "ones_like",
         "empty_like", "full_like", "randn", "rand"}
    )

    def __init__(self) -> None:
        super().__init__("torch")

    def __getattr__(self, name: str):
        attr = getattr(torch, name)
        if name in self._FACTORIES:
            def factory(*args, _f=attr, **kwargs):
                if "device" in kwargs:
                    kwargs["device"] = _to_cpu_device(kwargs["device"])
                kwargs.pop("pin_memory", None)
                return _f(*args, **kwargs)
            return factory
        return attr


class _NoStream:
    """torch.cuda.Stream/Event stand-in: DDP's communication stream and the p2p events.

    On the CPU every operation runs in issue order on one "stream", so there is nothing to wait
    for or record: each method is deliberately a no-op that returns what callers expect."""

    def __init__(self, *args, **kwargs) -> None:
        """Accepts CUDA stream/event arguments (device, priority, flags) and ignores them."""

    def wait_stream(self, *args, **kwargs) -> None:
        """Ordering between streams holds already: there is one."""

    def wait_event(self, *args, **kwargs) -> None:
        """Events complete when recorded on the CPU."""

    def record_event(self, *args, **kwargs) -> "_NoStream":
        return _NoStream()

    def record(self, *args, **kwargs) -> None:
        """Nothing pending to mark."""

    def synchronize(self) -> None:
        """Work issued on the CPU has finished when the call returns."""

    def query(self) -> bool:
        return True


def _patch_torch_cuda() -> None:
    cuda = torch.cuda
    # param_and_grad_buffer, p2p_communication, DDP: torch.empty(..., device=torch.cuda.current_device())
    cuda.current_device = lambda: torch.device("cpu")
    # DDP.start_param_sync / p2p_communication: torch.cuda.synchronize()
    cuda.synchronize = lambda *a, **k: None
    cuda.empty_cache = lambda *a, **k: None
    # DDP (overlap_grad_reduce) communication stream; timers' events
    cuda.Stream = _NoStream
    cuda.Event = _NoStream
    cuda.stream = lambda *a, **k: contextlib.nullcontext()
    cuda.default_stream = lambda *a, **k: _NoStream()
    cuda.current_stream = lambda *a, **k: _NoStream()
    # CudaRNGStatesTracker.add: torch.cuda.get_rng_state() / torch.cuda.manual_seed(seed)
    cuda.get_rng_state = lambda *a, **k: torch.get_rng_state()
    cuda.random.get_rng_state = cuda.get_rng_state
    # (only the CPU generator: torch.manual_seed itself calls torch.cuda.manual_seed_all)
    cuda.manual_seed = lambda seed: torch.default_generator.manual_seed(int(seed))


def _patch_tensor_cuda() -> None:
    # DistributedOptimizer.get_parameter_state_dp_zero / load_parameter_state_from_dp_zero
    # (parallel.optimizer_checkpoint: fully_reshardable; the default dp_reshardable form gathers
    # nothing) move gather buffers with `tensor.cuda()`.
    # Without CUDA that call can only fail, so here it keeps the tensor where it is.
    torch.Tensor.cuda = lambda self, *args, **kwargs: self


def _patch_rng_tracker() -> None:
    # CudaRNGStatesTracker.fork (tensor-parallel init and dropout): the "cuda" RNG state is the
    # CPU generator's state here.
    random = importlib.import_module("megatron.core.tensor_parallel.random")
    random._get_cuda_rng_state = lambda *a, **k: torch.get_rng_state()
    random._set_cuda_rng_state = lambda state, *a, **k: torch.set_rng_state(state)


def _patch_device_literals() -> None:
    for name in _MODULES_WITH_CUDA_TENSORS:
        module = importlib.import_module(name)
        if getattr(module, "torch", None) is torch:
            module.torch = _CpuTorch()


def _patch_tensor_type() -> None:
    # DistributedOptimizer._build_model_and_main_param_groups and Float16OptimizerWithFloat16Params
    # check `param.type()` against 'torch.cuda.FloatTensor' / 'torch.cuda.BFloat16Tensor'. Only
    # calls made from megatron.core.optimizer see the CUDA names; every other caller is unaffected.
    original = torch.Tensor.type

    def type_(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if not args and not kwargs and isinstance(result, str) and not self.is_cuda:
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("megatron.core.optimizer"):
                return result.replace("torch.", "torch.cuda.", 1)
        return result

    torch.Tensor.type = type_


class _DoneWork:
    """What an async collective returns when there was nothing to communicate."""

    def wait(self, *args, **kwargs) -> bool:
        return True

    def is_completed(self) -> bool:
        return True


def _skip_on_one_rank(collective):
    """Wrap a buffer collective `(output, input, *, group, async_op)` so that a group of one rank
    does no work: a reduce-scatter, all-gather (or all-reduce) over one rank is the identity, yet
    gloo still copies the whole buffer for it."""

    def call(output, input, *args, group=None, async_op=False, **kwargs):
        if dist.get_world_size(group) == 1 and output.numel() == input.numel():
            if output.data_ptr() != input.data_ptr():
                output.copy_(input)
            return _DoneWork() if async_op else None
        return collective(output, input, *args, group=group, async_op=async_op, **kwargs)

    call._cpt_one_rank = True
    return call


def _patch_one_rank_buffer_collectives() -> None:
    # _ParamAndGradBucketGroup.start_grad_sync / start_param_sync (the distributed optimizer's
    # gradient reduce-scatter and parameter all-gather over the flat DDP buffers) call these module
    # globals even when the data-parallel group has one rank; with gloo each call copies the full
    # buffer (two ~40 MB copies per step for a 10M-parameter model). The all-reduce used without the
    # distributed optimizer returns at once on one rank and needs nothing.
    module = importlib.import_module("megatron.core.distributed.param_and_grad_buffer")
    for name in ("dist_reduce_scatter_func", "dist_all_gather_func"):
        collective = getattr(module, name, None)
        if collective is not None and not getattr(collective, "_cpt_one_rank", False):
            setattr(module, name, _skip_on_one_rank(collective))


def _multi_tensor_scale(chunk_size, noop_flag, tensor_lists, scale) -> None:
    """megatron's no-Apex `local_multi_tensor_scale` (`dst.copy_(src * scale)`), in place when the
    source is the destination: the same products, one pass instead of a temporary and a copy."""
    for src, dst in zip(tensor_lists[0], tensor_lists[1]):
        if src is dst:
            dst.mul_(scale)
        else:
            dst.copy_(src * scale)


def _patch_grad_clip_scale() -> None:
    # clip_grad_by_total_norm_fp32 scales every gradient by the clip coefficient through
    # multi_tensor_scale_impl(..., [grads, grads], coeff); without Apex/TE (always on CPU) that is
    # megatron.core.utils.local_multi_tensor_scale, which allocates `grad * coeff` and copies it back.
    utils = importlib.import_module("megatron.core.utils")
    clip_grads = importlib.import_module("megatron.core.optimizer.clip_grads")
    fallback = getattr(utils, "local_multi_tensor_scale", None)
    if fallback is not None and getattr(clip_grads, "multi_tensor_scale_impl", None) is fallback:
        clip_grads.multi_tensor_scale_impl = _multi_tensor_scale


def _check_version() -> None:
    from megatron_ext import compat

    compat.warn_if_untested("megatron_ext.cpu (CPU runs may meet a CUDA call it does not redirect)")


def _quiet_expected_warnings() -> None:
    # Without CUDA, TE and Apex are absent by design; megatron warns about each fallback at import.
    for pattern in (
        "Transformer Engine and Apex are not installed",
        "Apex is not installed",
        "The .grad attribute of a Tensor that is not a leaf Tensor is being accessed",
    ):
        warnings.filterwarnings("ignore", message=pattern)


def enable(force: bool = False) -> bool:
    """Redirect megatron-core's CUDA assumptions to the CPU when CUDA is absent, or always with
    `force` (training.device=cpu on a GPU machine: this process then never touches its GPUs).
    Idempotent. Returns True when the CPU layer is active.
    """
    global _enabled
    if _enabled:
        return True
    if not force and not cuda_absent():
        return False
    _check_version()
    _quiet_expected_warnings()
    _patch_torch_cuda()
    _patch_tensor_cuda()
    _patch_rng_tracker()
    _patch_device_literals()
    _patch_tensor_type()
    _patch_one_rank_buffer_collectives()
    _patch_grad_clip_scale()
    _enabled = True
    return True
