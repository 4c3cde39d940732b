"""Conversion: bad input is refused with an error naming the file, tensor or config key, before
anything is written (and before megatron is imported); HF config → ModelConfig per architecture;
the fused layouts are the ones megatron's TP slicing expects; the shard writer's naming."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from convert_fixtures import tiny_llama_dir
from cpt.config import ModelConfig
from megatron_ext.convert import ConversionError, hf_to_mcore
from megatron_ext.convert import layout
from megatron_ext.convert.hf_config import model_config_from_hf
from megatron_ext.convert.hf_io import ShardedSafetensorsWriter


@pytest.fixture(scope="module")
def llama_src(tmp_path_factory) -> Path:
    return tiny_llama_dir(tmp_path_factory.mktemp("convert_err") / "llama")


@pytest.fixture
def llama(llama_src, tmp_path) -> Path:
    dst = tmp_path / "llama"
    shutil.copytree(llama_src, dst)
    return dst


def _edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


def _shard_of(folder: Path, name: str) -> Path:
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    return folder / index["weight_map"][name]


def _convert(folder: Path, tmp_path: Path, **kw) -> None:
    out = tmp_path / "out"
    try:
        hf_to_mcore(folder, out, **kw)
    finally:
        assert not out.exists()  # nothing half-written
        assert not list(tmp_path.glob(".out-*"))  # nor its temporary folder (cpt.io.atomic_dir)


def test_unsupported_architecture_names_config_and_type(llama, tmp_path):
    _edit_config(llama, model_type="gpt_neox", architectures=["GPTNeoXForCausalLM"])
    with pytest.raises(ConversionError, match=r"config\.json: model_type 'gpt_neox'.*GPTNeoXForCausalLM"):
        _convert(llama, tmp_path)


def test_missing_shard_file_is_named(llama, tmp_path):
    shard = _shard_of(llama, "model.layers.2.mlp.down_proj.weight")
    shard.unlink()
    with pytest.raises(ConversionError, match=rf"{shard.name}: shard file listed in the index is missing"):
        _convert(llama, tmp_path)


def test_tensor_of_wrong_shape_names_tensor_file_and_shapes(llama, tmp_path):
    name = "model.layers.1.self_attn.k_proj.weight"
    shard = _shard_of(llama, name)
    tensors = load_file(str(shard))
    tensors[name] = torch.zeros(24, 64)  # 3 KV heads' rows where the config says 2
    save_file(tensors, str(shard), metadata={"format": "pt"})
    with pytest.raises(ConversionError, match=rf"{shard.name}: tensor '{name}' has shape \(24, 64\), expected \(16, 64\)"):
        _convert(llama, tmp_path)


def test_missing_and_unknown_tensors_are_named(llama, tmp_path):
    index_path = llama / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    name = "model.layers.3.post_attention_layernorm.weight"
    file = index["weight_map"].pop(name)
    index_path.write_text(json.dumps(index))
    with pytest.raises(ConversionError, match=rf"tensor '{name}' is missing"):
        _convert(llama, tmp_path)
    index["weight_map"][name] = file
    index["weight_map"]["model.layers.0.self_attn.q_norm.weight"] = file  # e.g. a Qwen3 checkpoint
    index_path.write_text(json.dumps(index))
    with pytest.raises(ConversionError, match=r"not understood by the converter: \['model\.layers\.0\.self_attn\.q_norm"):
        _convert(llama, tmp_path)


def test_target_tp_pp_must_divide_the_model(llama, tmp_path):
    with pytest.raises(ConversionError, match=r"--tp 3 does not divide the model's num_attention_heads=8"):
        _convert(llama, tmp_path, tp=3)
    with pytest.raises(ConversionError, match=r"--pp 3 does not divide the model's num_hidden_layers=4"):
        _convert(llama, tmp_path, pp=3)


@pytest.mark.parametrize("changes,message", [
    ({"hidden_act": "gelu"}, r"hidden_act is 'gelu'"),
    ({"attention_bias": True}, r"attention_bias is true"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}}, r"rope scaling type 'yarn'"),
    ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 2.0}},
     r"low_freq_factor=2\.0 is not supported"),
])
def test_features_megatron_does_not_reproduce_are_refused(llama, tmp_path, changes, message):
    _edit_config(llama, **changes)
    with pytest.raises(ConversionError, match=message):
        _convert(llama, tmp_path)


def test_cli_reports_conversion_errors_in_one_line(llama, tmp_path, capsys):
    from cpt.cli import main

    _edit_config(llama, model_type="mamba")
    assert main(["convert", "hf-to-mcore", str(llama), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("convert error: ") and "'mamba'" in err[0]


# ------------------------------------------------------------------ config mapping


LLAMA3_8B = {  # transformers 4 spelling (rope_theta / rope_scaling), as on the Hub
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": False,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192}, "hidden_act": "silu",
}


def test_llama3_config_maps_every_field():
    cfg = model_config_from_hf(LLAMA3_8B, "config.json")
    assert (cfg.num_layers, cfg.hidden_size, cfg.ffn_hidden_size) == (32, 4096, 14336)
    assert (cfg.num_attention_heads, cfg.query_groups, cfg.vocab_size) == (32, 8, 128256)
    assert cfg.rotary_base == 500000.0 and cfg.rope_scaling.factor == 8.0
    assert cfg.max_position_embeddings == 131072 and cfg.norm_epsilon == 1e-5
    assert not cfg.tie_embeddings and not cfg.qkv_bias


def test_mistral_and_qwen2_configs():
    mistral = dict(LLAMA3_8B, model_type="mistral", rope_scaling=None, rope_theta=1e6, sliding_window=None,
                   max_position_embeddings=32768, vocab_size=32768)
    cfg = model_config_from_hf(mistral, "config.json")
    assert cfg.rope_scaling is None and cfg.rotary_base == 1e6 and not cfg.qkv_bias
    qwen = dict(LLAMA3_8B, model_type="qwen2", rope_scaling=None, tie_word_embeddings=True, use_sliding_window=False)
    cfg = model_config_from_hf(qwen, "config.json")
    assert cfg.qkv_bias and cfg.tie_embeddings
    with pytest.raises(ConversionError, match="use_sliding_window"):
        model_config_from_hf(dict(qwen, use_sliding_window=True), "config.json")


# ------------------------------------------------------------------ layouts


def test_fused_qkv_is_megatrons_per_group_interleave_and_splits_by_tp():
    cfg = ModelConfig(num_layers=1, hidden_size=8, ffn_hidden_size=8, num_attention_heads=4, num_query_groups=2,
                      vocab_size=10)  # hn = 2, 2 q heads per group
    q = torch.arange(8).repeat_interleave(1).float().view(8, 1) + 100
    k = torch.arange(4).float().view(4, 1) + 200
    v = torch.arange(4).float().view(4, 1) + 300
    fused = layout.fuse_qkv(cfg, q, k, v).view(-1).tolist()
    # group 0: q heads 0,1 (rows 100-103), k head 0 (200,201), v head 0 (300,301); then group 1
    assert fused == [100, 101, 102, 103, 200, 201, 300, 301, 104, 105, 106, 107, 202, 203, 302, 303]
    tp_rank1 = layout.fuse_qkv(cfg, q, k, v).chunk(2, dim=0)[1].view(-1).tolist()
    assert tp_rank1 == fused[8:]  # TP rank 1 holds whole group 1: what megatron's column split gives
    back = layout.split_qkv(cfg, layout.fuse_qkv(cfg, q, k, v))
    assert all(torch.equal(a, b) for a, b in zip(back, (q, k, v)))


def test_gate_up_and_vocab_padding_invert():
    gate, up = torch.randn(6, 4), torch.randn(6, 4)
    g2, u2 = layout.split_gate_up(layout.fuse_gate_up(gate, up))
    assert torch.equal(g2, gate) and torch.equal(u2, up)
    emb = torch.randn(10, 4)
    padded = layout.pad_vocab(emb, 16)
    assert padded.shape == (16, 4) and torch.equal(padded[10:], torch.zeros(6, 4))
    assert torch.equal(layout.unpad_vocab(padded, 10), emb)


def test_shard_writer_names_shards_and_writes_index(tmp_path):
    w = ShardedSafetensorsWriter(tmp_path, max_shard_bytes=100)
    for i in range(3):
        w.add(f"t{i}", torch.zeros(10))  # 40 bytes each: two per shard
    w.add("big", torch.zeros(100))  # larger than a shard: alone in its own
    files = w.finish()
    assert files == [f"model-0000{k}-of-00003.safetensors" for k in (1, 2, 3)]
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == {"t0": files[0], "t1": files[0], "t2": files[1], "big": files[2]}
    assert index["metadata"]["total_size"] == 520
    assert not list(tmp_path.glob(".*tmp"))


# ------------------------------------------------------------------ .bin input (weights_only)


class NotATensor:
    """An arbitrary class: unpickling it would run code from the checkpoint."""


def _bin_folder(src: Path, dst: Path, extra: dict | None = None) -> Path:
    from safetensors.torch import load_file

    dst.mkdir()
    shutil.copy(src / "config.json", dst / "config.json")
    tensors = {}
    for shard in sorted(src.glob("*.safetensors")):
        tensors.update(load_file(str(shard)))
    torch.save({**tensors, **(extra or {})}, dst / "pytorch_model.bin")
    return dst


def test_bin_checkpoint_is_read_with_weights_only(llama_src, tmp_path):
    from megatron_ext.convert.hf_config import read_hf_config
    from megatron_ext.convert.hf_io import HFWeights
    from megatron_ext.convert.to_mcore import preflight

    folder = _bin_folder(llama_src, tmp_path / "bin")
    weights = HFWeights(folder)
    cfg = model_config_from_hf(read_hf_config(folder), "config.json")
    preflight(weights, cfg, cfg.vocab_size)  # every tensor found with its shape
    name = "model.layers.0.mlp.up_proj.weight"
    expected = load_file(str(_shard_of(llama_src, name)))[name]
    assert torch.equal(weights.get(name, tuple(expected.shape)), expected)


def test_bin_checkpoint_with_pickled_objects_is_refused(llama_src, tmp_path):
    from megatron_ext.convert.hf_io import HFWeights

    folder = _bin_folder(llama_src, tmp_path / "evil", extra={"payload": NotATensor()})
    with pytest.raises(ConversionError, match=r"pytorch_model\.bin: cannot be read \(UnpicklingError"):
        HFWeights(folder)


def test_export_reference_config_must_describe_the_checkpoint_model():
    from megatron_ext.convert.hf_config import hf_config_from_model

    cfg = model_config_from_hf(LLAMA3_8B, "config.json")
    assert hf_config_from_model(cfg, "bfloat16", dict(LLAMA3_8B))["dtype"] == "bfloat16"
    with pytest.raises(ConversionError, match=r"num_layers: 16 vs 32"):
        hf_config_from_model(cfg, "bfloat16", dict(LLAMA3_8B, num_hidden_layers=16))
