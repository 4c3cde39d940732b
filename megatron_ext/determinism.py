"""`training.deterministic`: bitwise-reproducible kernels, for resumes that must equal an
uninterrupted run bit for bit on GPU (and for debugging a divergence).

GPU training is not reproducible by default: SDPA's flash-attention backward, the embedding's
backward (F.embedding) and index_add-style reductions accumulate with atomics; cuBLAS may pick a
split-K kernel with a workspace per stream; NCCL may pick a reduction algorithm per call; TE's fused
attention backward is nondeterministic unless told. Turned on, this module asks each of them for its
deterministic path: torch's deterministic algorithms (an op without one raises instead of running
nondeterministically, so nothing is silently left out), cuDNN without autotuning, a fixed cuBLAS
workspace, NCCL's ring algorithm (unless the launcher set NCCL_ALGO), TE's deterministic algorithms,
and megatron's `deterministic_mode` (embedding lookups by indexing, whose backward has a
deterministic implementation). It costs speed, so it is off by default. The CPU path is deterministic
already (the CPU tests resume bit for bit); turning it on there applies the same torch setting.

The settings are process-wide: `enable` returns what it replaced and `restore` puts it back, so an
engine closed in a long-lived process (tests, a sweep driver) leaves the process as it found it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

ENV = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8", "NCCL_ALGO": "Ring", "NVTE_ALLOW_NONDETERMINISTIC_ALGO": "0"}
"""Set before the first cuBLAS handle / NCCL communicator is created (the engine enables this
before it initialises the process group). A value the launcher already set is kept, except TE's,
which must say 0."""


@dataclass
class Previous:
    """What `enable` replaced."""

    algorithms: bool
    warn_only: bool
    cudnn_deterministic: bool
    cudnn_benchmark: bool
    env: dict[str, str | None] = field(default_factory=dict)


def enable() -> Previous:
    """Turn deterministic kernels on for this process; returns what to `restore`."""
    previous = Previous(torch.are_deterministic_algorithms_enabled(),
                        torch.is_deterministic_algorithms_warn_only_enabled(),
                        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    for name, value in ENV.items():
        previous.env[name] = os.environ.get(name)
        if name == "NVTE_ALLOW_NONDETERMINISTIC_ALGO" or name not in os.environ:
            os.environ[name] = value
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    return previous


def restore(previous: Previous) -> None:
    torch.use_deterministic_algorithms(previous.algorithms, warn_only=previous.warn_only)
    torch.backends.cudnn.deterministic = previous.cudnn_deterministic
    torch.backends.cudnn.benchmark = previous.cudnn_benchmark
    for name, value in previous.env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
