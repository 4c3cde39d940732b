"""File-backed tensors for the import's state dict, so its peak memory is about one tensor.

megatron's `dist_checkpointing.save` takes the whole state dict at once. Holding every converted
tensor in anonymous memory would make an import's peak the model's size (16 GB for an 8B model in
bf16). Instead each converted tensor is copied into a shared memory map of a scratch file beside the
output and the in-memory copy is dropped: its pages belong to the page cache, which the kernel
writes back and reclaims under pressure, so they cannot push the process out of memory. The
scratch folder (the model's size on disk) is removed after the save.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch


class ScratchStore:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._count = 0
        self.bytes = 0

    def put(self, tensor: torch.Tensor) -> torch.Tensor:
        """A file-backed copy of `tensor` (same dtype and shape)."""
        path = self.folder / f"{self._count:06d}.bin"
        self._count += 1
        nbytes = tensor.numel() * tensor.element_size()
        with open(path, "wb") as f:
            f.truncate(max(nbytes, 1))
        mapped = torch.from_file(str(path), shared=True, size=tensor.numel(), dtype=tensor.dtype)
        mapped = mapped.view(tensor.shape)
        mapped.copy_(tensor)
        self.bytes += nbytes
        return mapped

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
