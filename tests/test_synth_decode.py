"""The transformers backend's decode loop (cpt.synth.generators.decode_loop) against `model.generate`.

Real SmolLM2-135M-Instruct on CPU, a handful of short prompts, 16 new tokens: greedy text must equal
`generate`'s token for token, finished rows must stop costing compute, and a request's text must
not depend on its batch-mates. The cache surgery (row selection, left trim, merge) is also checked
on hand-made tensors.
"""
from __future__ import annotations

import functools

import pytest
import torch
from transformers import DynamicCache

from cpt.assets import smollm2_hf_dir
from cpt.synth.generators import ChatRequest, SamplingParams
from cpt.synth.generators.decode_loop import DecodeStats, _kv, _merge, _select
from cpt.synth.generators.transformers_backend import TransformersGenerator

QUESTIONS = ["What is 2+2?", "Name a colour.", "Explain gravity in one long sentence with many words please.",
             "Say hi.", "Why is the sky blue? Answer briefly.", "Count to five."]
GREEDY = SamplingParams(max_new_tokens=16, temperature=0.0)
SAMPLED = SamplingParams(max_new_tokens=16, temperature=0.7, top_p=0.95)


def _requests(questions=QUESTIONS, offset: int = 0) -> list[ChatRequest]:
    return [ChatRequest(f"q{offset + i}", [{"role": "user", "content": q}], seed=offset + i)
            for i, q in enumerate(questions)]


@pytest.fixture(scope="module")
def gen():
    return TransformersGenerator(str(smollm2_hf_dir()), batch_size=4, num_threads=1)


def _run(gen, decode: str, requests, params, monkeypatch, batch_size: int = 4):
    monkeypatch.setattr(gen, "decode", decode)
    monkeypatch.setattr(gen, "batch_size", batch_size)
    monkeypatch.setattr(gen, "stats", DecodeStats())
    done = {c.key: c for c in gen.generate(requests, params)}
    return [done[r.key] for r in requests], gen.stats


def _fields(c):
    return c.key, c.text, c.n_tokens, c.extra


def test_greedy_loop_equals_generate_and_finished_rows_stop_costing(gen, monkeypatch):
    reqs = _requests()
    reference, full = _run(gen, "generate", reqs, GREEDY, monkeypatch)
    reasons = {c.extra["finish_reason"] for c in reference}
    assert reasons == {"stop", "length"}, reasons  # both endings are exercised, padding too (lengths differ)
    assert len({c.extra["prompt_tokens"] for c in reference}) > 1
    for decode in ("prune", "refill"):
        got, stats = _run(gen, decode, reqs, GREEDY, monkeypatch)
        assert [_fields(c) for c in got] == [_fields(c) for c in reference], decode
        # one decode row-step per generated token after a row's first, nothing for rows that ended
        assert stats.row_steps == sum(c.n_tokens - 1 for c in got) < full.row_steps, (decode, stats, full)
    assert stats.merges > 0  # refill admitted requests into a running batch


def test_generate_batch_keeps_the_batch_order_and_equals_generate(gen, monkeypatch):
    reqs = _requests()[:3][::-1]
    monkeypatch.setattr(gen, "decode", "generate")
    reference = gen.generate_batch(reqs, GREEDY)
    monkeypatch.setattr(gen, "decode", "refill")
    got = gen.generate_batch(reqs, GREEDY)
    assert [_fields(c) for c in got] == [_fields(c) for c in reference]
    assert [c.key for c in got] == [r.key for r in reqs]


@pytest.mark.parametrize("params", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_a_request_gets_the_same_text_alone_or_among_other_requests(gen, monkeypatch, params):
    target = _requests()[2]
    alone, _ = _run(gen, "refill", [target], params, monkeypatch)
    others = _requests(["What is 2+2?", "Tell me a joke about cats.", "Hello!"], offset=10)
    among, stats = _run(gen, "refill", others + [target], params, monkeypatch, batch_size=2)
    if params is GREEDY:  # the target (the longest prompt, admitted last) joined a running batch
        assert stats.merges > 0
    pruned, _ = _run(gen, "prune", [target] + others[:1], params, monkeypatch)
    assert alone[0].text == among[-1].text == pruned[0].text, (alone[0].text, among[-1].text, pruned[0].text)
    if params is SAMPLED:  # sampled from the request's own seed: a different seed samples differently
        reseeded = ChatRequest(target.key, target.messages, seed=target.seed + 1)
        assert _run(gen, "refill", [reseeded], params, monkeypatch)[0][0].text != alone[0].text


@pytest.mark.parametrize("params", [SamplingParams(max_new_tokens=12, temperature=1e-3, top_p=1.0),
                                    SamplingParams(max_new_tokens=12, temperature=1.0, top_p=1e-6)],
                         ids=["cold", "narrow_top_p"])
def test_temperature_and_top_p_are_applied_as_generate_applies_them(gen, monkeypatch, params):
    reqs = _requests()[:2]
    greedy, _ = _run(gen, "refill", reqs, SamplingParams(max_new_tokens=12, temperature=0.0), monkeypatch)
    warm, _ = _run(gen, "refill", reqs, SamplingParams(max_new_tokens=12, temperature=1.0, top_p=1.0), monkeypatch)
    sampled, _ = _run(gen, "refill", reqs, params, monkeypatch)
    assert [c.text for c in sampled] == [c.text for c in greedy] != [c.text for c in warm]


def test_threads_are_set_while_computing_and_restored_between_completions(gen, monkeypatch):
    monkeypatch.setattr(gen, "num_threads", 1)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen = []
    monkeypatch.setattr(gen.model, "forward", _recording(gen.model.forward, seen))
    try:
        for _ in gen.generate(_requests()[:2], SamplingParams(max_new_tokens=3, temperature=0.0)):
            assert torch.get_num_threads() == 2 and not torch.is_inference_mode_enabled()
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {1}


def _recording(forward, seen):
    @functools.wraps(forward)  # the loop reads forward's signature for the cache's keyword
    def call(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return forward(*args, **kwargs)
    return call


def test_a_generation_config_the_loop_cannot_honour_falls_back_to_generate(gen, monkeypatch):
    assert gen._loop_unsupported() == ""
    monkeypatch.setattr(gen.model.generation_config, "repetition_penalty", 1.3)
    assert gen._loop_unsupported() == "its generation config sets repetition_penalty"
    with pytest.raises(ValueError, match="decode must be one of refill, prune, generate"):
        TransformersGenerator(str(smollm2_hf_dir()), decode="beam")


def _cache(rows: list[list[float]], layers: int = 2) -> tuple[DynamicCache, torch.Tensor]:
    """A cache whose key/value at (row, position) is the given number in every head and channel; 0 is padding."""
    cache = DynamicCache()
    t = torch.tensor(rows)[:, None, :, None].expand(-1, 2, -1, 3).contiguous()
    for layer in range(layers):
        cache.update(t, -t, layer)
    return cache, (torch.tensor(rows) != 0).long()


def test_select_keeps_rows_and_cuts_columns_no_kept_row_attends():
    cache, mask = _cache([[0, 0, 1, 2], [0, 3, 4, 5], [6, 7, 8, 9]])
    cache, mask = _select(cache, mask, torch.tensor([0, 1]))
    assert mask.tolist() == [[0, 1, 1], [1, 1, 1]]
    for k, v in _kv(cache):
        assert k[:, 0, :, 0].tolist() == [[0, 1, 2], [3, 4, 5]] and torch.equal(v, -k)
    assert cache.get_seq_length() == 3


def test_merge_left_pads_the_shorter_cache_and_its_mask():
    cache, mask = _cache([[0, 1, 2], [3, 4, 5]])
    other, other_mask = _cache([[0, 6, 7, 8, 9]])
    cache, mask = _merge(cache, mask, other, other_mask)
    assert mask.tolist() == [[0, 0, 0, 1, 1], [0, 0, 1, 1, 1], [0, 1, 1, 1, 1]]
    for k, v in _kv(cache):
        assert k[:, 1, :, 2].tolist() == [[0, 0, 0, 1, 2], [0, 0, 3, 4, 5], [0, 6, 7, 8, 9]] and torch.equal(v, -k)
    assert cache.get_seq_length() == 5


def test_cpt_synth_decode_option_reaches_the_backend():
    """`cpt synth --decode` picks the decode of the transformers backend; an unknown one is refused."""
    from cpt.cli import build_parser
    from cpt.synth.generators import build_generator

    parser = build_parser()
    args = parser.parse_args(["synth", "--output", "qa.jsonl", "--decode", "generate", "--batch-size", "3"])
    gen = build_generator("transformers", str(smollm2_hf_dir()), batch_size=args.batch_size, decode=args.decode)
    assert (gen.decode, gen.batch_size) == ("generate", 3)
    assert parser.parse_args(["synth", "--output", "qa.jsonl"]).decode == "refill"
    with pytest.raises(SystemExit):
        parser.parse_args(["synth", "--output", "qa.jsonl", "--decode", "beam"])
