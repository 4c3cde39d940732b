"""Model provider pieces: SDPA core attention equals megatron's own DotProductAttention (causal, GQA,
explicit masks); vocabulary padding; the tensor-parallel split table."""
from __future__ import annotations

import pytest
import torch

from cpt.config import ModelConfig
from train_fixtures import megatron_world  # noqa: F401 (a fixture)


def _tconf(heads: int, groups: int):
    from megatron.core.transformer import TransformerConfig

    return TransformerConfig(num_layers=1, hidden_size=heads * 16, num_attention_heads=heads,
                             num_query_groups=groups, attention_dropout=0.0, hidden_dropout=0.0,
                             masked_softmax_fusion=False)


@pytest.mark.parametrize("heads, groups", [(4, 4), (4, 2), (8, 1)])
def test_sdpa_matches_megatron_dot_product_attention(megatron_world, heads, groups):
    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.core.transformer.enums import AttnMaskType

    from megatron_ext.model import SDPAttention

    conf = _tconf(heads, groups)
    torch.manual_seed(0)
    sq, b, hn = 24, 3, 16
    q = torch.randn(sq, b, heads, hn)
    k = torch.randn(sq, b, groups, hn)
    v = torch.randn(sq, b, groups, hn)
    ref_attn = DotProductAttention(conf, layer_number=1, attn_mask_type=AttnMaskType.causal, attention_type="self")
    ours = SDPAttention(conf, layer_number=1, attn_mask_type=AttnMaskType.causal, attention_type="self")
    causal = torch.triu(torch.ones(sq, sq, dtype=torch.bool), diagonal=1)[None, None]
    ref = ref_attn(q, k, v, causal.expand(b, 1, sq, sq))
    got = ours(q, k, v, None)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    # an explicit mask (e.g. reset_attention_mask at document boundaries) is honoured too
    doc_mask = causal.clone().expand(b, 1, sq, sq).clone()
    doc_mask[..., 12:, :12] = True
    torch.testing.assert_close(ours(q, k, v, doc_mask), ref_attn(q, k, v, doc_mask), rtol=1e-5, atol=1e-5)


def test_padded_vocab_size():
    from megatron_ext.model import padded_vocab_size

    cfg = ModelConfig(num_layers=1, hidden_size=8, ffn_hidden_size=8, num_attention_heads=1,
                      vocab_size=49152, make_vocab_size_divisible_by=128)
    assert padded_vocab_size(cfg, 1) == 49152
    assert padded_vocab_size(cfg, 8) == 49152
    cfg2 = ModelConfig(num_layers=1, hidden_size=8, ffn_hidden_size=8, num_attention_heads=1,
                       vocab_size=49153, make_vocab_size_divisible_by=128)
    assert padded_vocab_size(cfg2, 1) == 49280 and padded_vocab_size(cfg2, 2) == 49408


@pytest.mark.parametrize(
    "name, dim",
    [("embedding.word_embeddings.weight", 0), ("output_layer.weight", 0),
     ("decoder.layers.3.self_attention.linear_qkv.weight", 0), ("decoder.layers.0.mlp.linear_fc2.weight", 1),
     ("decoder.layers.0.self_attention.linear_proj.weight", 1), ("decoder.layers.0.input_layernorm.weight", None),
     ("decoder.final_layernorm.weight", None)],
)
def test_tp_split_table(name, dim):
    from megatron_ext.model import tp_split_dim

    assert tp_split_dim(name) == dim


@pytest.mark.parametrize("reset_pos, reset_attn, eod_loss", [(True, True, True), (False, True, False), (True, False, True)])
def test_ltor_masks_match_megatron_gpt_dataset(reset_pos, reset_attn, eod_loss):
    import numpy as np
    from megatron.core.datasets.gpt_dataset import _get_ltor_masks_and_position_ids

    from cpt.train.stream_data import ltor_masks

    rng = np.random.default_rng(0)
    tokens = rng.integers(3, 50, size=(3, 40))
    tokens[0, [5, 6, 20]] = 2
    tokens[1, 39] = 2
    tokens[2, 0] = 2
    ours = ltor_masks(tokens, 2, reset_pos, reset_attn, eod_loss)
    for row in range(3):
        attn, loss_mask, pos = _get_ltor_masks_and_position_ids(
            torch.from_numpy(tokens[row]), 2, reset_pos, reset_attn, eod_loss, create_attention_mask=reset_attn)
        np.testing.assert_array_equal(ours["loss_mask"][row], loss_mask.numpy())
        np.testing.assert_array_equal(ours["position_ids"][row], pos.numpy())
        assert "attention_mask" not in ours  # document masking travels as document ids, never dense
        if reset_attn:
            d = ours["document_ids"][row]
            allowed = np.tril(np.ones((40, 40), dtype=bool)) & (d[:, None] == d[None, :])
            np.testing.assert_array_equal(~allowed[None], attn.numpy())
        else:
            assert "document_ids" not in ours
