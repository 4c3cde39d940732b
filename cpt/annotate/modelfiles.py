"""Checks that a local HF model folder is complete before anything loads it.

transformers, given a folder that lacks its weights or tokenizer, either tries the Hub (we never
download) or fails deep inside with a message about a repo id. Checking the files first gives one
clear error naming the folder and what is missing.
"""
from __future__ import annotations

from pathlib import Path

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model", "vocab.json", "spiece.model")


class ModelFolderError(FileNotFoundError):
    """A model folder is missing or lacks files needed to load it."""


def check_model_dir(path: str | Path, what: str) -> Path:
    """Return `path` if it holds config.json, weights and a tokenizer; else raise, naming the gaps."""
    path = Path(path)
    if not path.is_dir():
        raise ModelFolderError(f"{what} folder {path} does not exist (models load from local folders only)")
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        missing.append("weights (one of " + ", ".join(WEIGHT_FILES) + ")")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        missing.append("tokenizer (one of " + ", ".join(TOKENIZER_FILES) + ")")
    if missing:
        raise ModelFolderError(f"{what} folder {path} is missing " + "; ".join(missing))
    return path


def check_tokenizer_dir(path: str | Path) -> Path:
    """Return `path` if it holds an HF tokenizer (and the config AutoTokenizer reads); else raise."""
    path = Path(path)
    if not path.is_dir():
        raise ModelFolderError(f"tokenizer folder {path} does not exist")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ModelFolderError(f"tokenizer folder {path} is missing a tokenizer (one of {', '.join(TOKENIZER_FILES)})")
    return path


def pick_device(device: str | None) -> str:
    """`None` means cuda when available, else cpu."""
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"
