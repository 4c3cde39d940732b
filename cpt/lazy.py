"""Package exports imported on first use.

A package whose modules serve both a driver and its workers (`cpt.launch`, `cpt.sweep`) should not
make every worker process import the driver's side: each export is named with the submodule it
lives in, and imported only when someone asks the package for it.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_exports(package: str, where: dict[str, str]) -> Callable[[str], Any]:
    """A module-level `__getattr__` for `package`: `name` comes from `package.<where[name]>` when
    first asked for, and is then kept in the package's namespace (later lookups do not come here)."""
    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__


__all__ = ["lazy_exports"]
