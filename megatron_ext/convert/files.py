"""Non-weight files of an HF folder (config, tokenizer, generation config, chat template) and the
atomic folder commit shared by both directions."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".ckpt")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
HF_SUBDIR = "hf"  # inside an import: the source's config/tokenizer files, reused by exports
TRAINER_STATE_FILE = "trainer_state.json"
SIDE_SUFFIXES = (".json", ".txt", ".model", ".jinja", ".tiktoken", ".py")
# written by cpt itself, not part of the model
OWN_FILES = ("cpt-asset-complete.json", "convert_summary.json")


def side_files(folder: Path) -> list[Path]:
    """Tokenizer/config files to carry along: small text-like files, not weights or their index."""
    out = []
    for path in sorted(Path(folder).iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.name in WEIGHT_INDEXES or path.name in OWN_FILES or path.name.endswith(WEIGHT_SUFFIXES):
            continue
        if path.name.endswith(SIDE_SUFFIXES) or path.name.startswith("tokenizer"):
            out.append(path)
    return out


def copy_side_files(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> list[str]:
    dst.mkdir(parents=True, exist_ok=True)
    copied = []
    for path in side_files(src):
        if path.name in skip:
            continue
        shutil.copy2(path, dst / path.name)
        copied.append(path.name)
    return copied


def partial_dir(out: Path) -> Path:
    """A fresh temporary folder beside `out` (an older partial one, from a killed run, is removed)."""
    tmp = out.parent / f".{out.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit_dir(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished temporary folder to `out` (replacing it only with `overwrite`)."""
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out}: already exists (pass --overwrite to replace it)")
        shutil.rmtree(out)
    os.replace(tmp, out)
