"""Reading slices of a megatron `torch_dist` checkpoint with PyTorch Distributed Checkpoint's own
reader, one layer at a time.

megatron's `dist_checkpointing.load` in a one-process world cannot ask for one slice of a stacked
tensor (its torch ShardedTensor bridge places every other fragment on "another" rank, which in a
world of one is rank 0 itself). The checkpoint files are PyTorch DCP (`.metadata` + `__*.distcp`),
so this asks DCP directly: a load planner whose read items cover exactly the requested region
(DCP's `create_read_items_for_chunk_list` computes the overlaps with the saved chunks), copied into
caller-owned buffers. No process group is needed and megatron is not imported.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint import load as dcp_load
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, TensorStorageMetadata
from torch.distributed.checkpoint.planner import LoadPlan, ReadItem

from megatron_ext.convert.errors import ConversionError


class _SlicePlanner(DefaultLoadPlanner):
    """Reads `requests[key] = (buffer, global offset of buffer[0, 0, ...])`."""

    def __init__(self, requests: dict[str, tuple[torch.Tensor, tuple[int, ...]]]) -> None:
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)
        self.requests = requests

    def create_local_plan(self) -> LoadPlan:
        from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list

        items: list[ReadItem] = []
        for key, (buffer, offsets) in self.requests.items():
            chunk = ChunkStorageMetadata(offsets=torch.Size(offsets), sizes=buffer.shape)
            items += create_read_items_for_chunk_list(key, self.metadata.state_dict_metadata[key], [chunk])
        return LoadPlan(items)

    def resolve_tensor(self, read_item: ReadItem) -> torch.Tensor:
        # The region a read item fills within the caller's buffer: a requested region may be made
        # of several saved chunks (megatron saves a SwiGLU fc1 as its gate and up halves).
        view = self.requests[read_item.dest_index.fqn][0]
        for dim, (offset, length) in enumerate(zip(read_item.dest_offsets, read_item.lengths)):
            view = view.narrow(dim, offset, length)
        return view


class CheckpointTensors:
    """Global shapes/dtypes of a checkpoint's tensors, and reads of whole tensors or layer slices."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        if not (self.folder / ".metadata").is_file():
            raise ConversionError(f"{self.folder / '.metadata'}: missing; not a megatron torch_dist checkpoint")
        self.reader = FileSystemReader(str(self.folder))
        self.meta = {k: v for k, v in self.reader.read_metadata().state_dict_metadata.items()
                     if isinstance(v, TensorStorageMetadata)}

    def __contains__(self, key: str) -> bool:
        return key in self.meta

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.meta[key].size)

    def dtype(self, key: str) -> torch.dtype:
        return self.meta[key].properties.dtype

    def read(self, keys: list[str], layer: int | None = None) -> dict[str, torch.Tensor]:
        """Whole tensors (`layer` None) or slice `layer` of the leading (stacked layer) axis."""
        requests = {}
        for key in keys:
            shape = self.shape(key)
            if layer is None:
                requests[key] = (torch.empty(shape, dtype=self.dtype(key)), (0,) * len(shape))
            else:
                requests[key] = (torch.empty((1, *shape[1:]), dtype=self.dtype(key)), (layer,) + (0,) * (len(shape) - 1))
        try:
            with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
                warnings.simplefilter("ignore", UserWarning)
                dcp_load({k: b for k, (b, _) in requests.items()}, storage_reader=self.reader,
                         planner=_SlicePlanner(requests), no_dist=True)
        except FileNotFoundError as exc:
            raise ConversionError(f"{self.folder}: checkpoint file missing ({exc.filename})") from None
        except CheckpointException as exc:  # DCP wraps the reader's errors, per rank
            missing = re.search(r"No such file or directory: '([^']+)'", str(exc))
            if missing:
                raise ConversionError(f"{self.folder}: checkpoint file missing ({missing.group(1)})") from None
            raise ConversionError(f"{self.folder}: cannot read {sorted(requests)}: {str(exc).splitlines()[0]}") from None
        return {k: (b if layer is None else b[0]) for k, (b, _) in requests.items()}
