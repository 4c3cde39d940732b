"""Claims on the chunks of a launch: which slice builds which chunk, decided as the slices go.

The slices of a launch share one work folder. Each walks its own chunks first, then the other
slices' chunks in plan order (`steal_order`), so a slice that ends early takes the chunks a
slower or later one has not started on, and the slices end together instead of waiting for the
slowest; the chunk order of the output is the plan's whoever builds a chunk. A chunk is built by
the one slice that claimed it: a claim is a symbolic link `CLAIMS/chunk-NNNNNN` whose target names
the claimant, made by one system call that fails where the name exists (atomic on local and
network file systems, and its owner is readable with it: no half-written claim). A claim holds
for the whole launch; only a later attempt of the same slice may take it again - one attempt of a
slice runs at a time, so the one before it died or failed - and so a retry finishes the chunks its
dead attempt claimed. Each launch claims in a folder of its own that its driver makes after
emptying the claims of earlier launches (`new_claims_folder`): a rerun of the command starts with
no claims, and a slice still running from an earlier driver finds its folder gone and stops.
"""
from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from cpt.corpus.plan import Chunk


@dataclass(frozen=True)
class Claims:
    """The claims folder of one launch, as seen by one slice (`owner`, e.g. "slice-00003")."""

    folder: Path
    owner: str

    def take(self, index: int) -> bool:
        """Claim chunk `index` for `owner`; True if it is ours now (new, or an earlier attempt's of
        this slice), False if another slice holds it."""
        path = self.folder / f"chunk-{index:06d}"
        try:
            os.symlink(self.owner, path)
            return True
        except FileExistsError:
            return os.readlink(path) == self.owner
        except FileNotFoundError:
            raise ValueError(f"{self.folder}: this launch's claims folder is gone (a newer run of the same "
                             f"command started); this slice stops") from None

    def holder(self, index: int) -> str | None:
        """Who claimed chunk `index`, None if nobody."""
        try:
            return os.readlink(self.folder / f"chunk-{index:06d}")
        except FileNotFoundError:
            return None


def new_claims_folder(work: Path) -> Path:
    """An empty claims folder for a new launch in work folder `work` (earlier launches' removed)."""
    root = Path(work) / "claims"
    shutil.rmtree(root, ignore_errors=True)
    folder = root / uuid.uuid4().hex[:16]
    folder.mkdir(parents=True)
    return folder


def steal_order(own: Sequence[Chunk], whole: Sequence[Chunk]) -> list[Chunk]:
    """`own` in order, then the other chunks of `whole` in plan order: a slice's own chunks come
    first; then it takes the lowest chunks nobody claimed yet, so chunks keep being committed about
    in plan order and the driver's in-order assembly follows them (what is left after the last
    slice ends is the last chunks, not half the plan)."""
    mine = {c.index for c in own}
    return [*own, *(c for c in whole if c.index not in mine)]


__all__ = ["Claims", "new_claims_folder", "steal_order"]
