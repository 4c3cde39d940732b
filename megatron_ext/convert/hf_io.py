"""Reading and writing HF weight folders one tensor at a time.

Reading: `model.safetensors`, or shards listed by `model.safetensors.index.json`, opened lazily with
safetensors' `safe_open` (a tensor is read only when asked for). A folder with only PyTorch `.bin`
files is read with `torch.load(weights_only=True, mmap=True)`, which refuses anything but tensors,
so no input is ever unpickled into code. Writing: tensors are buffered until `max_shard_bytes`, then
written as one safetensors shard under a temporary name; `finish()` gives the shards HF's
`model-0000k-of-0000n.safetensors` names and writes the index.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from megatron_ext.convert.errors import ConversionError

SAFE_INDEX = "model.safetensors.index.json"
SAFE_SINGLE = "model.safetensors"
BIN_INDEX = "pytorch_model.bin.index.json"
BIN_SINGLE = "pytorch_model.bin"


class HFWeights:
    """Name → file map of an HF folder; `get` reads and shape-checks one tensor."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._handles: dict[str, Any] = {}
        self.weight_map = self._weight_map()
        missing = sorted({f for f in self.weight_map.values() if not (self.folder / f).is_file()})
        if missing:
            needed = next(n for n, f in self.weight_map.items() if f == missing[0])
            raise ConversionError(f"{self.folder / missing[0]}: shard file listed in the index is missing "
                                  f"(it holds {needed!r} and others)")

    def _weight_map(self) -> dict[str, str]:
        for index in (SAFE_INDEX, BIN_INDEX):
            path = self.folder / index
            if path.is_file():
                try:
                    return dict(json.loads(path.read_text())["weight_map"])
                except (json.JSONDecodeError, KeyError) as exc:
                    raise ConversionError(f"{path}: not a valid index ({exc!r})") from None
        single = self.folder / SAFE_SINGLE
        if single.is_file():
            with safe_open(str(single), framework="pt") as f:
                return {name: SAFE_SINGLE for name in f.keys()}
        if (self.folder / BIN_SINGLE).is_file():
            return {name: BIN_SINGLE for name in self._open(BIN_SINGLE).keys()}
        raise ConversionError(f"{self.folder}: no {SAFE_SINGLE}, {SAFE_INDEX}, {BIN_SINGLE} or {BIN_INDEX}")

    def _open(self, file: str) -> Any:
        if file not in self._handles:
            path = self.folder / file
            try:
                if file.endswith(".safetensors"):
                    self._handles[file] = safe_open(str(path), framework="pt")
                else:  # tensors only: weights_only refuses any other pickled object
                    self._handles[file] = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            except FileNotFoundError:
                raise ConversionError(f"{path}: shard file is missing") from None
            except Exception as exc:  # a corrupt or truncated file
                raise ConversionError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None
        return self._handles[file]

    def names(self) -> set[str]:
        return set(self.weight_map)

    def has(self, name: str) -> bool:
        return name in self.weight_map

    def check(self, name: str, shape: tuple[int, ...]) -> None:
        """Presence and shape of a tensor from the file header only (no data read)."""
        file = self.weight_map.get(name)
        if file is None:
            raise ConversionError(f"{self.folder}: tensor {name!r} is missing from the checkpoint")
        handle = self._open(file)
        got = tuple(handle.get_slice(name).get_shape() if file.endswith(".safetensors") else handle[name].shape)
        if got != tuple(shape):
            raise ConversionError(f"{self.folder / file}: tensor {name!r} has shape {got}, "
                                  f"expected {tuple(shape)} from config.json")

    def get(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        file = self.weight_map.get(name)
        if file is None:
            raise ConversionError(f"{self.folder}: tensor {name!r} is missing from the checkpoint")
        handle = self._open(file)
        tensor = handle.get_tensor(name) if file.endswith(".safetensors") else handle[name]
        if tuple(tensor.shape) != tuple(shape):
            raise ConversionError(f"{self.folder / file}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                                  f"expected {tuple(shape)} from config.json")
        return tensor

    def dtype(self, name: str) -> torch.dtype:
        """dtype of one tensor, read from a one-row slice (not the whole tensor)."""
        file = self.weight_map[name]
        handle = self._open(file)
        if file.endswith(".safetensors"):
            return handle.get_slice(name)[:1].dtype
        return handle[name].dtype

    def close(self) -> None:
        self._handles.clear()


class ShardedSafetensorsWriter:
    """Writes tensors into safetensors shards of at most `max_shard_bytes` (one tensor may exceed it)."""

    def __init__(self, folder: Path, max_shard_bytes: int) -> None:
        self.folder = Path(folder)
        self.max_shard_bytes = max_shard_bytes
        self._buffer: dict[str, torch.Tensor] = {}
        self._buffer_bytes = 0
        self._shards: list[tuple[str, list[str]]] = []  # temporary file name, tensor names
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self._buffer and self._buffer_bytes + size > self.max_shard_bytes:
            self._flush()
        self._buffer[name] = tensor.contiguous()
        self._buffer_bytes += size
        self.total_bytes += size

    def _flush(self) -> None:
        tmp = f".shard-{len(self._shards):05d}.safetensors.tmp"
        save_file(self._buffer, str(self.folder / tmp), metadata={"format": "pt"})
        self._shards.append((tmp, list(self._buffer)))
        self._buffer, self._buffer_bytes = {}, 0

    def finish(self) -> list[str]:
        """Name the shards and write the index (none for a single file); returns the file names."""
        if self._buffer:
            self._flush()
        n = len(self._shards)
        if n == 1:
            os.replace(self.folder / self._shards[0][0], self.folder / SAFE_SINGLE)
            return [SAFE_SINGLE]
        weight_map, files = {}, []
        for k, (tmp, names) in enumerate(self._shards):
            final = f"model-{k + 1:05d}-of-{n:05d}.safetensors"
            os.replace(self.folder / tmp, self.folder / final)
            files.append(final)
            weight_map.update({name: final for name in names})
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
        (self.folder / SAFE_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        return files
