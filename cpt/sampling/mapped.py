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
evicts the very index pages the next step needs. Whole-array scans of a tracked array ask for
their range ahead with `willneed(array)`. The loader calls `release()` once per step (one syscall
per array). Off Linux it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import sys
import threading
import weakref
from typing import Optional

import numpy as np

_MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", 4)
_MADV_RANDOM = getattr(mmap, "MADV_RANDOM", 1)
_MADV_WILLNEED = getattr(mmap, "MADV_WILLNEED", 3)
_PAGE = mmap.PAGESIZE
_lock = threading.Lock()
_tracked: "weakref.WeakValueDictionary[int, np.ndarray]" = weakref.WeakValueDictionary()
_libc: Optional[ctypes.CDLL] = None


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
        _advise(array, _MADV_RANDOM)
    return array


def willneed(array: np.ndarray) -> None:
    """Read a tracked array's pages ahead (asynchronously): for a scan of the whole array, which
    MADV_RANDOM would otherwise fault in one page at a time."""
    if sys.platform.startswith("linux") and isinstance(array, np.memmap) and array.nbytes >= 2 * _PAGE:
        _advise(array, _MADV_WILLNEED)


def _advise(arr: np.ndarray, advice: int) -> int:
    """madvise the whole pages inside `arr`; returns the bytes advised (0 on failure)."""
    start = arr.ctypes.data
    lo = -(-start // _PAGE) * _PAGE
    hi = (start + arr.nbytes) // _PAGE * _PAGE
    if hi > lo and _madvise()(lo, hi - lo, advice) == 0:
        return hi - lo
    return 0


def release() -> int:
    """Drop this process's mappings of every tracked array's pages (whole pages inside the array
    only); the data stays in the page cache. Returns the bytes advised."""
    with _lock:
        arrays = list(_tracked.values())
    return sum(_advise(arr, _MADV_DONTNEED) for arr in arrays)


def tracked() -> int:
    """How many arrays are registered (for tests and logs)."""
    with _lock:
        return len(_tracked)
