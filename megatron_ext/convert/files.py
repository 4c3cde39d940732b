"""Non-weight files of an HF folder (config, tokenizer, generation config, chat template); the
folder itself is committed by `cpt.io.atomic_dir`."""
from __future__ import annotations

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

