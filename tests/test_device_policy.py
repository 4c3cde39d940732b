"""training.device: auto | cuda | cpu. `cuda`, and `auto` on a machine that has GPUs, never fall
back to the CPU; `auto` without GPUs runs on the CPU and says so in the run's first log line."""
from __future__ import annotations

import json

import pytest
import torch

from megatron_ext import device


@pytest.fixture
def no_cuda(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device, "GPU_DEVICE_GLOBS", (str(tmp_path / "nvidia[0-9]*"),))
    return tmp_path


def test_auto_without_gpus_runs_on_cpu_and_says_so(no_cuda):
    choice = device.resolve("auto")
    assert choice.kind == "cpu" and choice.backend == "gloo"
    assert choice.reason == "running on CPU: training.device=auto and this machine has no GPU"


def test_auto_on_a_machine_with_gpus_torch_cannot_see_is_an_error(no_cuda):
    (no_cuda / "nvidia0").touch()
    with pytest.raises(RuntimeError, match=r"has GPUs \(.*nvidia0\) but torch sees none .*training.device=cpu"):
        device.resolve("auto")
    assert device.resolve("cpu").kind == "cpu"  # on purpose: allowed


def test_cuda_without_a_visible_gpu_is_an_error(no_cuda, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(RuntimeError, match=r"training.device=cuda but torch sees no GPU .*CUDA_VISIBLE_DEVICES=''"):
        device.resolve("cuda")


def test_gpus_visible_auto_and_cuda_choose_them(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "NVIDIA H100")
    for setting in ("auto", "cuda"):
        choice = device.resolve(setting, local_rank=1)
        assert choice.kind == "cuda" and choice.backend == "nccl"
        assert choice.reason == "running on GPU 1 of 2 (NVIDIA H100)"
    with pytest.raises(RuntimeError, match="local rank 2 needs GPU 2 but torch sees 2"):
        device.resolve("auto", local_rank=2)
    assert "2 GPU(s) left unused" in device.resolve("cpu").reason


def test_unknown_setting_is_refused():
    with pytest.raises(ValueError, match="training.device"):
        device.resolve("tpu")


def test_recipe_key_is_validated():
    from cpt.config import RecipeError, recipe_from_dict

    with pytest.raises(RecipeError, match="training.device"):
        recipe_from_dict({"model": dict(num_layers=1, hidden_size=8, ffn_hidden_size=8, num_attention_heads=1,
                                        vocab_size=8),
                          "training": dict(train_tokens=8, device="gpu")})


def test_engine_first_line_says_cpu_and_cuda_request_fails(tmp_path):
    """The real engine on this CPU machine: training.device=cuda fails before anything is built;
    auto trains, and the run's first record is the engine line (device, dtype, kernels)."""
    from train_fixtures import tiny_recipe, write_byte_shards

    from cpt.config import recipe_from_dict
    from cpt.train.loop import Trainer
    from cpt.train.run import build_training_data
    from megatron_ext.engine import MegatronEngine

    train, _ = write_byte_shards(tmp_path / "shards")
    rd = tiny_recipe(train, None, tmp_path / "run", training={"train_tokens": 64 * 8, "device": "cuda"})
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the cuda request would succeed")
    with pytest.raises(RuntimeError, match="training.device=cuda but torch sees no GPU"):
        MegatronEngine(recipe_from_dict(rd))
    rd["training"].update(device="auto", precision="bf16")
    recipe = recipe_from_dict(rd)
    engine = MegatronEngine(recipe)
    try:
        trainer = Trainer(recipe, engine, build_training_data(recipe).train)
        trainer.train()
        trainer.logger.close()
    finally:
        engine.close()
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["kind"] == "event"
    assert first["message"].startswith("running on CPU: training.device=auto and this machine has no GPU; float32 "
                                       "(training.precision=bf16 runs in fp32 on the CPU), gloo; local spec")
    assert first["engine"]["attention"] == "torch SDPA" and first["engine"]["device"] == "cpu"
    assert not any(first["engine"]["fusions"].values())


def test_gpu_check_without_cuda_fails_with_one_line():
    import subprocess
    import sys
    from pathlib import Path

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: gpu_check would run")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no CUDA device visible (torch ")


def test_gpu_check_rehearses_every_part_on_cpu_at_tiny_sizes(tmp_path):
    """The prepared GPU check must not rot between GPU sessions: its CPU rehearsal runs the same code
    (engine and plain loop, bf16 resume, the asset-free hooks part) at tiny sizes. A part that fails
    (here the SmolLM2 parity, pointed at a folder that does not exist) is recorded, the others run."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    proc = subprocess.run([sys.executable, str(script), "--allow-cpu", "--steps", "1", "--global-batch", "2",
                           "--smollm2", str(tmp_path / "missing")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert str(tmp_path / "missing") in report["smollm2_error"] and "smollm2" not in report
    assert set(report["part_seconds"]) == {"throughput", "resume", "smollm2", "hooks"}
    assert report["bench"] == "gpu" and report["resume_bitwise"] is True and report["losses_finite"] is True
    assert report["ours_tokens_per_s"] > 0 and report["plain_tokens_per_s"] > 0
    assert report["hooks"]["evals"] == 4 and report["hooks"]["hook_calls"] > 0
