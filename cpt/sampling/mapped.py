"""Memory-mapped arrays whose pages a rank lets go of once a step has read them.

The index cache and the shards are memory-mapped by every rank of a node, so their pages live once,
in the page cache. But each page a rank touches also stays mapped into that rank (and the kernel
maps the pages around a fault too), so a long run would leave every rank mapping every page it
ever read: memory that counts as the rank's own (USS) whenever no other rank maps the same page,
and grows with the corpus read. (Recent kernels map a whole large folio around a read, hundreds of
kB, so even a few hundred random reads map a lot.) `release()` drops this process's mappings of
those pages (madvise MADV_DONTNEED on a read-only file mapping: the page cache keeps the data, the
next read is a minor fault), so what a rank maps is bounded by what one micro-batch reads.

`track(array)` registers an array (a weak reference: an array nobody holds is not kept alive) and
marks its pages as read at random (madvise MADV_RANDOM): a step looks up a few thousand scattered
entries, and without it each page fault on a file not in the page cache reads the device's whole
read-ahead window around the page (megabytes on many machines), which floods the page cache and
evicts the very index pages the next step needs. Code that scans whole arrays (building a stream,
a checkpoint's ledgers) runs inside `scanning()`, which gives every tracked map the kernel's
normal read-ahead back for its duration (one page at a time, a cold scan is several times slower).
After each micro-batch the loader calls `release(arrays)` on the arrays that micro-batch could
have read (its streams' and table's, its shards' indexes: one syscall each); a scan releases
everything when it ends. Off Linux it does nothing.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import mmap
import sys
import threading
import weakref
from typing import Any, Iterable, Iterator, Optional

import numpy as np

_MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", 4)
_MADV_RANDOM = getattr(mmap, "MADV_RANDOM", 1)
_MADV_NORMAL = getattr(mmap, "MADV_NORMAL", 0)
_PAGE = mmap.PAGESIZE
_lock = threading.Lock()
_tracked: "weakref.WeakValueDictionary[int, np.ndarray]" = weakref.WeakValueDictionary()
_libc: Optional[ctypes.CDLL] = None
_scans = 0  # scanning() contexts open (while > 0, tracked maps read ahead normally)


def _madvise():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return _libc.madvise


def track(array: np.ndarray) -> np.ndarray:
    """Register a read-only memory-mapped array for `release()`; returns it. Other arrays are ignored."""
    if (sys.platform.startswith("linux") and isinstance(array, np.memmap) and not array.flags.writeable
            and array.nbytes >= 2 * _PAGE):
        with _lock:
            _tracked[id(array)] = array
            if not _scans:
                _advise(array, _MADV_RANDOM, outward=True)  # the whole mapping: not split in three
    return array


@contextlib.contextmanager
def scanning() -> Iterator[None]:
    """Normal read-ahead on every tracked map while the block runs (whole-array scans); random
    access again after the last open block ends. Safe from several threads."""
    global _scans
    with _lock:
        _scans += 1
        if _scans == 1:
            _advise_all(_MADV_NORMAL)
    try:
        yield
    finally:
        with _lock:
            _scans -= 1
            if _scans == 0:
                _advise_all(_MADV_RANDOM)
        release()  # a scan maps what it read; hand it all back


def _advise_all(advice: int) -> None:
    for arr in list(_tracked.values()):
        _advise(arr, advice, outward=True)


def _advise(arr: np.ndarray, advice: int, outward: bool = False) -> int:
    """madvise the whole pages inside `arr` (outward: every page it touches); returns the bytes
    advised (0 on failure)."""
    start, end = arr.ctypes.data, arr.ctypes.data + arr.nbytes
    lo = start // _PAGE * _PAGE if outward else -(-start // _PAGE) * _PAGE
    hi = -(-end // _PAGE) * _PAGE if outward else end // _PAGE * _PAGE
    if hi > lo and _madvise()(lo, hi - lo, advice) == 0:
        return hi - lo
    return 0


def release(arrays: Optional[Iterable[Any]] = None) -> int:
    """Drop this process's mappings of the pages of `arrays` (those that are tracked arrays or views
    of one; None: every tracked array), whole pages inside each array only; the data stays in the
    page cache. Returns the bytes advised."""
    with _lock:
        if arrays is None:
            chosen = list(_tracked.values())
        else:
            chosen = [a for a in arrays if _is_tracked(a)]
    return sum(_advise(arr, _MADV_DONTNEED) for arr in chosen)


def let_go(array: np.ndarray) -> int:
    """Drop this process's mapping of a file-backed array's whole pages, tracked or not, written or
    not (a cache entry being built): the page cache keeps the data (written pages are written back
    as usual), so a build that fills arrays larger than memory should hold maps only what it is
    writing. Returns the bytes advised."""
    if not (sys.platform.startswith("linux") and isinstance(array, np.memmap)) or array.mode == "c":
        return 0  # a copy-on-write map's writes live only in its pages: dropping them loses them
    return _advise(array, _MADV_DONTNEED)


def _is_tracked(arr: Any) -> bool:
    """Whether `arr` is a tracked array or a view of one (a slice, a row)."""
    while isinstance(arr, np.ndarray):
        if _tracked.get(id(arr)) is arr:
            return True
        arr = arr.base
    return False


def tracked() -> int:
    """How many arrays are registered (for tests and logs)."""
    with _lock:
        return len(_tracked)
