"""Which device a run trains on (`training.device`), decided once, never by silent fallback.

- `cuda`: the GPUs torch sees; none visible (a CPU build of torch, an empty CUDA_VISIBLE_DEVICES,
  a driver problem), or fewer than this node's ranks need, is an error.
- `auto`: `cuda` when torch sees a GPU. Without one, a machine that nevertheless has GPU device
  files (/dev/nvidia*, /dev/kfd) is an error too: a GPU job that cannot see its GPUs must not train
  on the CPU for days without complaint. Only a machine without GPUs runs on the CPU, and says so.
- `cpu`: the CPU on purpose (megatron_ext.cpu redirects megatron's CUDA assumptions), even where
  GPUs exist.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import torch

# device files a GPU driver creates; their presence means "this machine has GPUs"
GPU_DEVICE_GLOBS = ("/dev/nvidia[0-9]*", "/dev/kfd")


@dataclass(frozen=True, slots=True)
class DeviceChoice:
    kind: str  # "cuda" or "cpu"
    reason: str  # one line for the run's first log line

    @property
    def backend(self) -> str:
        return "nccl" if self.kind == "cuda" else "gloo"


def gpu_device_files() -> list[str]:
    """The GPU device files present (empty on a machine without GPUs)."""
    return sorted(p for pattern in GPU_DEVICE_GLOBS for p in glob.glob(pattern))


def _why_no_cuda() -> str:
    built = torch.version.cuda or torch.version.hip
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    parts = [f"torch {torch.__version__} " + (f"built with CUDA/ROCm {built}" if built else "is a CPU-only build")]
    if visible is not None:
        parts.append(f"CUDA_VISIBLE_DEVICES={visible!r}")
    return ", ".join(parts)


def resolve(setting: str, local_rank: int = 0) -> DeviceChoice:
    """The device for `training.device` = auto | cuda | cpu on this process (`local_rank` on its node)."""
    if setting not in ("auto", "cuda", "cpu"):
        raise ValueError(f"training.device: must be auto, cuda or cpu, got {setting!r}")
    available = torch.cuda.is_available()
    if setting == "cpu":
        unused = f"; {torch.cuda.device_count()} GPU(s) left unused" if available else ""
        return DeviceChoice("cpu", f"running on CPU (training.device=cpu{unused})")
    if available:
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise RuntimeError(
                f"training.device={setting}: local rank {local_rank} needs GPU {local_rank} but torch sees {count} "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); start fewer processes per node"
            )
        return DeviceChoice("cuda", f"running on GPU {local_rank} of {count} ({torch.cuda.get_device_name(local_rank)})")
    if setting == "cuda":
        raise RuntimeError(f"training.device=cuda but torch sees no GPU ({_why_no_cuda()})")
    found = gpu_device_files()
    if found:
        raise RuntimeError(
            f"training.device=auto: this machine has GPUs ({', '.join(found[:4])}) but torch sees none "
            f"({_why_no_cuda()}); fix the install, or set training.device=cpu to train on the CPU on purpose"
        )
    return DeviceChoice("cpu", "running on CPU: training.device=auto and this machine has no GPU")
