"""Which kernel implementation runs: the C++ extension `cpt._C` when it is built, else NumPy.

`backend` arguments across cpt.sampling take "auto" (C++ if available), "cpp" (C++ or an error that
says how to build it) or "numpy" (the reference). Both give identical outputs; tests prove it.
"""
from __future__ import annotations

from types import ModuleType

try:  # the extension is optional at import time so that a fresh checkout still imports
    from cpt import _C as _ext
except ImportError:  # pragma: no cover - exercised only without a build
    _ext = None

BACKENDS = ("auto", "cpp", "numpy")


def native() -> ModuleType | None:
    """The loaded extension module, or None when it is not built."""
    return _ext


def kernel_version() -> int:
    """KERNEL_VERSION of the C++ kernels (cache keys include it); 1 when only NumPy is available."""
    return int(_ext.KERNEL_VERSION) if _ext is not None else 1


def use_cpp(backend: str) -> bool:
    """True when `backend` resolves to the C++ kernels; raises a clear error for a bad or unbuilt one."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "numpy":
        return False
    if _ext is None:
        if backend == "cpp":
            raise RuntimeError(
                "backend='cpp' but the extension cpt._C is not built; run "
                "`python setup.py build_ext --inplace` in the repository root"
            )
        return False
    return True
