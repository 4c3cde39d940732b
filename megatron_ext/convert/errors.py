"""The one error type of checkpoint conversion: its message names the file, tensor or config key."""
from __future__ import annotations


class ConversionError(ValueError):
    """An input the converter cannot use; the message says which file/tensor/key and what to change."""
