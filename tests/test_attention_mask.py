"""Document masking without a dense mask: the block-diagonal path equals the dense (b, 1, s, s)
reference, for attention alone and for a whole model (loss and every gradient)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cpt.config import ModelConfig, ParallelConfig
from cpt.train.stream_data import ltor_masks
from train_fixtures import megatron_world  # noqa: F401 (a fixture)

EOD = 2


def documents(b=3, s=40, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, 60, size=(b, s + 1))
    tokens[0, [5, 6, 20]] = EOD  # an empty document between two end-of-document tokens
    tokens[1, s - 1] = EOD
    tokens[2, 0] = EOD
    return tokens


def dense_reference(tokens: np.ndarray) -> torch.Tensor:
    """megatron's mask: True where attention is NOT allowed (the rule ltor_masks used to build)."""
    b, s = tokens.shape
    mask = np.broadcast_to(~np.tril(np.ones((s, s), dtype=bool)), (b, 1, s, s)).copy()
    for row in range(b):
        for i in np.flatnonzero(tokens[row] == EOD):
            mask[row, 0, i + 1:, : i + 1] = True
    return torch.from_numpy(mask)


def test_document_ids_give_megatrons_mask_and_positions():
    tokens = documents()[:, :-1]
    ours = ltor_masks(tokens, EOD, True, True, True)
    d = ours["document_ids"]
    allowed = np.tril(np.ones((40, 40), dtype=bool))[None] & (d[:, :, None] == d[:, None, :])
    np.testing.assert_array_equal(~allowed, dense_reference(tokens)[:, 0].numpy())
    assert "attention_mask" not in ours


@pytest.mark.parametrize("heads, groups", [(4, 4), (4, 2)])
def test_block_diagonal_attention_equals_the_dense_mask(heads, groups):
    from megatron_ext.attention_mask import block_diagonal_attention, pack_documents

    tokens = documents()[:, :-1]
    b, s = tokens.shape
    ids = torch.from_numpy(ltor_masks(tokens, EOD, False, True, False)["document_ids"])
    _, params = pack_documents({"document_ids": ids, "tokens": torch.from_numpy(tokens)})
    torch.manual_seed(0)
    q = torch.randn(s, b, heads, 16, requires_grad=True)
    k = torch.randn(s, b, groups, 16, requires_grad=True)
    v = torch.randn(s, b, groups, 16, requires_grad=True)
    flat = lambda x: x.transpose(0, 1).reshape(b * s, x.shape[2], 16)  # [s, b, ..] -> [b*s, ..] (thd)
    got = block_diagonal_attention(flat(q), flat(k), flat(v), params, None, 0.0).view(b, s, -1)
    ref = F.scaled_dot_product_attention(q.permute(1, 2, 0, 3), k.permute(1, 2, 0, 3), v.permute(1, 2, 0, 3),
                                         attn_mask=~dense_reference(tokens), enable_gqa=groups != heads)
    ref = ref.permute(0, 2, 1, 3).reshape(b, s, -1)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ref)
    grads = torch.autograd.grad((got * g).sum(), (q, k, v))
    ref_grads = torch.autograd.grad((ref * g).sum(), (q, k, v))
    for a, r in zip(grads, ref_grads):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-5)


def test_packed_model_equals_the_dense_mask_model(megatron_world):
    """A 2-layer Llama: per-token losses and all gradients, packed documents vs dense mask."""
    from megatron_ext.attention_mask import pack_documents
    from megatron_ext.model import build_model, init_weights

    cfg = ModelConfig(num_layers=2, hidden_size=64, ffn_hidden_size=128, num_attention_heads=4, num_query_groups=2,
                      vocab_size=64, max_position_embeddings=64, attention_backend="sdpa")
    torch.manual_seed(0)
    model = build_model(cfg, ParallelConfig(), torch.float32, 40, True, True)
    init_weights(model, cfg, 0, 1, seed=0)
    sample = documents()
    tokens, labels = torch.from_numpy(sample[:, :-1]), torch.from_numpy(sample[:, 1:])
    masks = ltor_masks(sample[:, :-1], EOD, False, True, False)
    pos = torch.from_numpy(masks["position_ids"])

    def run(*args, **kw):
        model.zero_grad()
        loss = model(*args, **kw)
        (loss * torch.linspace(0.5, 1.5, loss.numel()).view_as(loss)).sum().backward()
        return loss.detach().reshape(-1), {n: p.grad.clone() for n, p in model.named_parameters()}

    dense_loss, dense_grads = run(tokens, pos, dense_reference(sample[:, :-1]), labels=labels)
    batch = {"tokens": tokens, "labels": labels, "position_ids": pos,
             "document_ids": torch.from_numpy(masks["document_ids"])}
    packed, params = pack_documents(batch)
    assert packed["tokens"].shape == (1, 120) and params.cu_seqlens_q.tolist()[:4] == [0, 6, 7, 21]
    loss, grads = run(packed["tokens"], packed["position_ids"], None, labels=packed["labels"],
                      packed_seq_params=params)
    torch.testing.assert_close(loss, dense_loss, rtol=1e-5, atol=1e-5)
    for name, g in dense_grads.items():
        torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-5, msg=name)


def test_blend_path_sends_document_ids_equal_to_megatrons_dense_mask(tmp_path, megatron_world):
    """data.blend with reset_attention_mask: megatron's GPTDataset builds no (1, s, s) mask any more;
    the micro-batch carries document_ids, and the mask they mean equals the one megatron's own
    dataset builds for the same samples (create_attention_mask=True: the reference)."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    from cpt.config import DataConfig
    from megatron_ext.datasets import _TokenIds, build_dataset
    from train_fixtures import EOD as BYTE_EOD, VOCAB, write_byte_shards

    train, _ = write_byte_shards(tmp_path / "shards")
    data = DataConfig(blend=[[train, 1.0]], eod_token_id=BYTE_EOD, reset_position_ids=True, reset_attention_mask=True)
    # 2048 samples: enough that several span a document boundary whichever Python's pydoc topics
    # (the fixture's documents) this runs on; 3.13's are longer than 3.11's
    n = 2048
    ours = build_dataset(data.blend, data, n, 64, 7, str(tmp_path / "cache"), VOCAB)
    batch = ours.fetch(np.arange(n))
    assert "attention_mask" not in batch and batch["document_ids"].dtype == np.int32
    config = GPTDatasetConfig(
        random_seed=7, sequence_length=64, blend=([train], None), split="1,0,0", path_to_cache=str(tmp_path / "ref"),
        tokenizer=_TokenIds(eod=BYTE_EOD, pad=-1, vocab_size=VOCAB), reset_position_ids=True,
        reset_attention_mask=True, eod_mask_loss=False, create_attention_mask=True, mmap_bin_files=True)
    ref, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [n, 0, 0], lambda: True, config).build()
    s = 64
    several = np.flatnonzero(batch["document_ids"].max(axis=1) > 0)  # samples spanning a document boundary
    assert len(several) >= 4
    for k in [*several[:8], 0, 1]:
        item = ref[int(k)]
        np.testing.assert_array_equal(batch["tokens"][k], item["tokens"].numpy())
        np.testing.assert_array_equal(batch["position_ids"][k], item["position_ids"].numpy())
        d = batch["document_ids"][k]
        allowed = np.tril(np.ones((s, s), dtype=bool)) & (d[:, None] == d[None, :])
        np.testing.assert_array_equal(~allowed, item["attention_mask"][0].numpy())
