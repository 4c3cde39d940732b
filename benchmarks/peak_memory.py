"""A process's resident memory and its peak since a reset, read from Linux's /proc: what the memory
benchmarks measure ("measured, not estimated"). Linux only.

The peak (VmHWM) is reset to the current resident size by writing 5 to /proc/self/clear_refs, so
`rss_mb("VmHWM") - reset_peak()` after an operation is the most memory it held above where it began:
every temporary counts, however short-lived, which sampling can miss."""
from __future__ import annotations

import ctypes
import os

MB = 1 << 20


def rss_mb(field: str = "VmRSS") -> float:
    """VmRSS (now) or VmHWM (the peak since the last reset) of this process, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / MB
    raise RuntimeError(f"/proc/self/status has no {field}")


def trim_heap() -> bool:
    """Hand freed heap pages back to the OS (glibc's malloc_trim), so that memory one measurement
    freed is not counted as resident at the start of the next, nor reused unseen by it. False where
    the C library has no malloc_trim (not glibc): a benchmark says so beside its figures."""
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return False
    trim(0)
    return True


def reset_peak() -> float:
    """Reset the peak to the current resident size; return that size (MiB)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return rss_mb("VmRSS")


def io_mb(field: str) -> float:
    """rchar or wchar of this process (/proc/self/io): bytes it read or wrote through system calls,
    page-cache hits included, in MiB: what a rank asks of the file system."""
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / MB
    raise RuntimeError(f"/proc/self/io has no {field}")


def pss_mb(pid: int) -> float:
    """Proportional set size of process `pid` in MiB: its private pages plus its share of pages it
    shares, so that summing it over processes counts every page once."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024 / MB
    raise RuntimeError(f"/proc/{pid}/smaps_rollup has no Pss")


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children, their children, ...)."""
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = [f"/proc/{parent}/task/{t}/children" for t in os.listdir(f"/proc/{parent}/task")]
        except OSError:
            continue
        for path in tasks:
            try:
                with open(path) as f:
                    kids = [int(c) for c in f.read().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out
