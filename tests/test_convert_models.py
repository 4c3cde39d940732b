"""HF ⇄ megatron-core conversion on real and tiny models, end to end.

SmolLM2-135M-Instruct (the cached HF folder converted from its GGUF) is imported, loaded by the
megatron engine with TP=1 and TP=3 (under torchrun; SmolLM2's 9 heads / 3 KV heads cannot be split
in two), and its logits on real English text are compared with transformers'. A tiny random Llama
(GQA, untied head, Llama-3 RoPE scaling, vocabulary 1000 padded to 1024) is loaded with TP=2 and
PP=2, a tiny Qwen2 (q/k/v biases, tied) with TP=1 and PP=2. Every model is exported back and compared
byte for byte with its source; the SmolLM2 export is loaded by transformers and generates the same
tokens as the source.

Three launches in all (one plain process, torchrun x3, torchrun x2): importing megatron costs ~9 s
per process. The worker is tests/workers/convert_cases.py.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from launch import launch, torchrun
import torch
from safetensors import safe_open

pytestmark = pytest.mark.slow
WORKER = Path(__file__).parent / "workers" / "convert_cases.py"
REPO = Path(__file__).resolve().parents[1]
# fp32 on CPU; the bound. Measured here: 0 at TP=1 (same kernels, same order), ~5e-5 at TP=3
# (the row-parallel output projections sum partial products across ranks).
LOGIT_ATOL = 1e-4


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("convert")
    launch([sys.executable, str(WORKER), "--out", str(root), "prepare"])
    for n, cases in ((3, ["smol_tp3"]), (2, ["llama_tp2", "llama_pp2", "qwen2_pp2"])):
        launch([*torchrun(n), str(WORKER), "--out", str(root), *cases])
    return root


def _max_diff(out: Path, ref: str, got: str) -> float:
    a, b = np.load(out / ref), np.load(out / got)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


@pytest.mark.parametrize("name,got", [("smol", "smol_tp1"), ("smol", "smol_tp3"), ("llama", "llama_tp2"),
                                      ("qwen2", "qwen2_tp1")])
def test_megatron_logits_equal_transformers(out, name, got):
    ref = np.load(out / f"{name}_hf_logits.npy")
    assert np.abs(ref).max() > 1.0  # real logits, not a degenerate model
    diff = _max_diff(out, f"{name}_hf_logits.npy", f"{got}_logits.npy")
    print(f"{got}: max |dlogit| = {diff:.3g}")
    assert diff <= LOGIT_ATOL


def test_smollm2_logits_are_on_real_text(out):
    tokens = np.load(out / "smol_tokens.npy")
    assert tokens.shape == (1, 48) and len(np.unique(tokens)) > 20
    # the model predicts this text well: most next tokens are in its top 10
    logits = np.load(out / "smol_hf_logits.npy")[0, :-1]
    top10 = np.argsort(-logits, axis=-1)[:, :10]
    hits = np.mean([t in row for t, row in zip(tokens[0, 1:], top10)])
    assert hits > 0.5, hits


@pytest.mark.parametrize("name", ["llama", "qwen2"])
def test_pipeline_parallel_loss_equals_transformers(out, name):
    """PP=2 (untied Llama; tied Qwen2, whose last stage holds a copy of the embedding): the summed
    token loss of the two-stage model equals transformers' over the real vocabulary (megatron pads
    it to 1024; the 24 padding rows take no part in the softmax)."""
    got = json.loads((out / f"{name}_pp2.json").read_text())
    tokens = torch.from_numpy(np.load(out / "tiny_tokens.npy")[:1])
    logits = torch.from_numpy(np.load(out / f"{name}_hf_logits.npy")[:1, :-1])
    ref = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten(), reduction="sum").item()
    assert got["tokens"] == 47
    assert got["loss_sum"] == pytest.approx(ref, rel=1e-5)


def _tensors(folder: Path) -> dict[str, tuple[str, bytes]]:
    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    out = {}
    for file in files:
        with safe_open(str(folder / file), framework="pt") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                out[name] = (str(t.dtype), tuple(t.shape), t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return out


@pytest.mark.parametrize("name", ["smol", "llama", "qwen2"])
def test_round_trip_is_byte_identical(out, name):
    from cpt.assets import smollm2_hf_dir

    source = smollm2_hf_dir() if name == "smol" else out / f"hf_{name}"
    src, exp = _tensors(source), _tensors(out / f"{name}_export")
    assert sorted(src) == sorted(exp)
    different = [n for n in src if src[n] != exp[n]]
    assert not different, different[:5]


def test_bf16_import_exports_the_bf16_cast_of_the_source(out):
    src, exp = _tensors(out / "hf_llama"), _tensors(out / "llama_bf16_export")
    assert sorted(src) == sorted(exp)
    for name, (dtype, shape, _) in exp.items():
        assert dtype == "torch.bfloat16" and shape == src[name][1]
    name = "model.layers.2.self_attn.k_proj.weight"
    with safe_open(str(out / "hf_llama" / json.loads((out / "hf_llama" / "model.safetensors.index.json").read_text())
                       ["weight_map"][name]), framework="pt") as f:
        want = f.get_tensor(name).to(torch.bfloat16)
    assert exp[name][2] == want.view(-1).view(torch.uint8).numpy().tobytes()
    assert json.loads((out / "llama_bf16_export" / "config.json").read_text())["dtype"] == "bfloat16"


def test_exports_are_sharded_with_index_and_carry_tokenizer(out):
    summary = json.loads((out / "prepare.json").read_text())
    smol = out / "smol_export"
    assert len(summary["smol_export"]["weight_files"]) == 3  # 538 MB at 200 MiB per shard
    index = json.loads((smol / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(summary["smol_export"]["weight_files"])
    for file in ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja"):
        assert (smol / file).read_bytes() == (out / "smol_mcore" / "hf" / file).read_bytes()
    assert json.loads((smol / "config.json").read_text())["tie_word_embeddings"] is True
    assert len(summary["llama_export"]["weight_files"]) > 1


def test_export_loads_in_transformers_and_generates_like_the_source(out):
    gen = json.loads((out / "prepare.json").read_text())["smol_generate"]
    assert len(gen["export"]) == 12
    assert gen["export"] == gen["source"]


def test_vocab_padding_added_on_import_and_removed_on_export(out):
    summary = json.loads((out / "prepare.json").read_text())
    assert summary["llama_import"]["padded_vocab_size"] == 1024  # 1000 -> multiple of 128 x TP=2
    assert summary["llama_export"]["padded_vocab_size_removed"] == 24
    assert summary["smol_import"]["padded_vocab_size"] == 49152  # already a multiple of 128


def test_training_starts_from_the_import_at_step_0_with_its_weights(out):
    got = json.loads((out / "prepare.json").read_text())["train_from_import"]
    assert got["loaded"] is True and got["step_before"] == 0
    assert got["loss"] == pytest.approx(got["reference_loss"], rel=1e-5)


def test_a_trained_checkpoint_exports_with_the_engines_logits(out):
    """A checkpoint the engine wrote (SwiGLU fc1 stored as two halves) exports to HF: its logits
    equal the trained engine's, and training moved them away from the import's."""
    got = json.loads((out / "prepare.json").read_text())["train_from_import"]
    assert got["trained_export_max_abs_diff"] < 1e-4
    assert got["trained_changed_max_abs"] > 1e-3


def test_import_is_a_complete_weights_only_checkpoint(out):
    from cpt.train.checkpoint import resolve_load_path

    ckpt = out / "llama_mcore"
    assert resolve_load_path(ckpt) == ckpt
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["weights_only"] is True and state["step"] == 0
    assert state["model"]["num_query_groups"] == 2 and state["model"]["rope_scaling"]["factor"] == 8.0
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary folder left


def _copy_ckpt(out: Path, name: str, dst: Path) -> Path:
    shutil.copytree(out / f"{name}_mcore", dst)
    return dst


def test_export_of_a_training_checkpoint_via_tools_script(out, tmp_path, capsys):
    """A trainer checkpoint has `recipe.model` and no `hf/` copy: --hf-reference supplies config and
    tokenizer files, and the export is still byte-identical; the tools script is the same command."""
    sys.path.insert(0, str(REPO / "tools"))
    from convert_checkpoint import main

    ckpt = _copy_ckpt(out, "qwen2", tmp_path / "run" / "checkpoints" / "step_00000005")
    state = json.loads((ckpt / "trainer_state.json").read_text())
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 5, "recipe": {"model": state["model"]}}))
    shutil.rmtree(ckpt / "hf")
    dst = tmp_path / "export"
    assert main(["--direction", "mcore-to-hf", "--load-dir", str(tmp_path / "run"), "--save-dir", str(dst),
                 "--hf-reference", str(out / "hf_qwen2")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["source"].endswith("step_00000005") and summary["warnings"] == []
    assert _tensors(dst) == _tensors(out / "hf_qwen2")
    assert json.loads((dst / "config.json").read_text())["model_type"] == "qwen2"


def test_export_without_reference_builds_config_with_transformers(out, tmp_path):
    from transformers import AutoConfig

    from megatron_ext.convert import mcore_to_hf

    ckpt = _copy_ckpt(out, "llama", tmp_path / "ckpt")
    shutil.rmtree(ckpt / "hf")
    summary = mcore_to_hf(ckpt, tmp_path / "export")
    assert "no tokenizer" in summary["warnings"][0]
    cfg = AutoConfig.from_pretrained(tmp_path / "export")
    assert (cfg.model_type, cfg.num_key_value_heads, cfg.vocab_size, cfg.tie_word_embeddings) == ("llama", 2, 1000, False)
    assert cfg.rope_parameters["rope_type"] == "llama3" and cfg.rope_parameters["factor"] == 8.0


def test_export_errors_name_the_tensor_or_file(out, tmp_path):
    from megatron_ext.convert import ConversionError, mcore_to_hf

    ckpt = _copy_ckpt(out, "llama", tmp_path / "ckpt")
    state_file = ckpt / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["model"]["ffn_hidden_size"] = 128  # a config that does not describe these weights
    state_file.write_text(json.dumps(state))
    with pytest.raises(ConversionError, match=r"tensor 'decoder\.layers\.mlp\.linear_fc1\.weight' has shape "
                                              r"\(4, 192, 64\), expected \(4, 256, 64\)"):
        mcore_to_hf(ckpt, tmp_path / "a")
    state["model"]["ffn_hidden_size"] = 96
    state_file.write_text(json.dumps(state))
    data = sorted(ckpt.glob("*.distcp"))[0]
    data.unlink()
    with pytest.raises(ConversionError, match=rf"checkpoint file missing \(.*{data.name}\)"):
        mcore_to_hf(ckpt, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(FileExistsError, match="--overwrite"):
        mcore_to_hf(out / "llama_mcore", out / "llama_export")
