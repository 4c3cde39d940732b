"""Local generation with a transformers causal LM (CPU or one GPU), batched with left padding.

This is the backend for small models and for tests (SmolLM2-135M-Instruct on CPU); it is also what
`cpt.synth.server` serves over HTTP. Requests are taken in order of prompt length, so neighbours in
a batch carry the least padding, and decoded by `decode`:

    refill    (default) `DecodeLoop` with continuous batching: a row leaves the batch, KV cache
              included, the step it ends, and waiting requests take the freed slots
    prune     `DecodeLoop` over batches of `batch_size`, finished rows dropped, no refill
    generate  `model.generate` per batch of `batch_size`: every row is computed until the batch's
              last row ends (the reference the loop is tested against)

Sampling (temperature, the model's top_k or transformers' default 50, top_p; greedy at temperature
0) is what `generate` applies. In the loop every request samples from its own `torch.Generator`
seeded with its `seed`, so its text does not depend on which requests share its batch (up to
floating-point rounding of differently padded batches, which can flip a near-tie). The `generate`
path seeds torch's global generator with each batch's first request's seed instead, so there a
request's sampled text depends on its batch. Models whose cache cannot be cut per row (sliding
window layers), or whose generation config asks for processors the loop does not apply, fall back
to `generate` with a warning.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Iterator, Sequence

from cpt.synth.generators.base import ChatRequest, Completion, SamplingParams
from cpt.synth.generators.decode_loop import DecodeLoop, DecodeStats, Row, supports_row_surgery

DECODES = ("refill", "prune", "generate")
# generation-config fields whose non-default values `generate` would apply and the loop does not
_UNSUPPORTED_DEFAULTS = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "min_length": 0, "min_new_tokens": None,
                         "bad_words_ids": None, "suppress_tokens": None, "begin_suppress_tokens": None,
                         "min_p": None, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0,
                         "forced_bos_token_id": None, "forced_eos_token_id": None, "sequence_bias": None,
                         "encoder_repetition_penalty": 1.0, "exponential_decay_length_penalty": None}


class TransformersGenerator:
    """`Generator` over a transformers causal LM: `DecodeLoop`, or `model.generate` per batch."""

    def __init__(self, model: str, batch_size: int = 8, device: str | None = None,
                 dtype: str = "auto", num_threads: int | None = None, sort_by_length: bool = True,
                 decode: str = "refill") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.num_threads = num_threads
        """Intra-op threads while generating (None: torch's default). On a shared or oversubscribed
        CPU one thread can be several times faster; set only while the model computes, then restored."""
        self.sort_by_length = sort_by_length
        """Batch requests of similar prompt length together (False: in the order given)."""
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(self.device).eval()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        """Rows computed at once (the loop's slots; `generate`'s batch)."""
        if decode not in DECODES:
            raise ValueError(f"decode must be one of {', '.join(DECODES)}, got {decode!r}")
        self.decode = decode
        """How batches are decoded (module docstring); "generate" where the loop cannot keep semantics."""
        if decode != "generate" and (why := self._loop_unsupported()):
            warnings.warn(f"{model}: {why}; decoding with model.generate instead", stacklevel=2)
            self.decode = "generate"
        self.stats = DecodeStats()
        """Forwards, prompt positions and decode row-steps computed so far (all decodes)."""
        self.name = f"transformers:{model}"

    def _loop_unsupported(self) -> str:
        """Why `DecodeLoop` cannot reproduce `generate` for this model ('' when it can)."""
        if not supports_row_surgery(self.model):
            return "its KV cache cannot be cut per row (sliding-window layers)"
        config = self.model.generation_config
        changed = [f for f, default in _UNSUPPORTED_DEFAULTS.items() if getattr(config, f, default) not in (default, None)]
        return f"its generation config sets {', '.join(changed)}" if changed else ""

    def prompt_text(self, req: ChatRequest) -> str:
        """The chat template applied: ends with the assistant's header, or with its prefill to continue."""
        if req.prefill:
            return self.tokenizer.apply_chat_template(req.messages, tokenize=False, add_generation_prompt=False,
                                                      continue_final_message=True)
        return self.tokenizer.apply_chat_template(req.messages, tokenize=False, add_generation_prompt=True)

    def generate(self, requests: Sequence[ChatRequest], params: SamplingParams) -> Iterator[Completion]:
        prompts = [self.prompt_text(r) for r in requests]
        ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        order = list(range(len(requests)))
        if self.sort_by_length:
            order.sort(key=lambda i: len(ids[i]))
        if self.decode != "generate":
            for _, completion in self._loop([requests[i] for i in order], [ids[i] for i in order], params,
                                            self.batch_size, refill=self.decode == "refill"):
                yield completion
            return
        for i in range(0, len(order), self.batch_size):
            chunk = order[i:i + self.batch_size]
            yield from self._generate([requests[j] for j in chunk], [prompts[j] for j in chunk], params)

    def generate_batch(self, batch: Sequence[ChatRequest], params: SamplingParams) -> list[Completion]:
        """The whole batch at once (one `generate` call, or the loop with a slot per request), in its order."""
        if self.decode == "generate":
            return self._generate(batch, [self.prompt_text(r) for r in batch], params)
        ids = self.tokenizer([self.prompt_text(r) for r in batch], add_special_tokens=False)["input_ids"]
        done = dict(self._loop(batch, ids, params, max(1, len(batch)), refill=False))
        return [done[i] for i in range(len(batch))]

    @contextlib.contextmanager
    def _computing(self):
        """`num_threads` and inference mode while the model computes; the caller's settings otherwise."""
        torch = self._torch
        previous = torch.get_num_threads()
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        try:
            with torch.inference_mode():
                yield
        finally:
            torch.set_num_threads(previous)

    def _loop(self, batch: Sequence[ChatRequest], ids: list[list[int]], params: SamplingParams, slots: int,
              refill: bool) -> Iterator[tuple[int, Completion]]:
        """`DecodeLoop` over `batch` in the order given: (index in `batch`, completion) as rows end."""
        torch = self._torch
        sample = params.temperature > 0
        rows = [Row(i, p, torch.Generator(self.device).manual_seed(r.seed % (1 << 64)) if sample else None)
                for i, (r, p) in enumerate(zip(batch, ids))]
        loop = DecodeLoop(self.model, pad_id=self.tokenizer.pad_token_id, stop_ids=self._stop_ids(),
                          max_new_tokens=params.max_new_tokens, slots=slots, refill=refill,
                          pick=self._sampler(params) if sample else _greedy, stats=self.stats)
        rows_done = loop.run(rows)
        while True:
            with self._computing():
                row = next(rows_done, None)
            if row is None:
                return
            req = batch[row.index]
            text = req.prefill + self.tokenizer.decode(row.tokens, skip_special_tokens=True)
            yield row.index, Completion(req.key, text, len(row.tokens), extra={
                "prompt_tokens": len(row.prompt_ids), "finish_reason": "stop" if row.finished else "length"})

    def _stop_ids(self) -> set[int]:
        """The tokens that end a row: the generation config's EOS ids (as `generate` stops) and the tokenizer's."""
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])
        return ids | ({self.tokenizer.eos_token_id} if self.tokenizer.eos_token_id is not None else set())

    def _sampler(self, params: SamplingParams):
        """Temperature, top-k, top-p as `generate` applies them, then one draw per row from its own generator."""
        torch = self._torch
        from transformers.generation import (LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper,
                                             TopPLogitsWarper)

        top_k = self.model.generation_config.top_k
        warpers = LogitsProcessorList([TemperatureLogitsWarper(params.temperature)] if params.temperature != 1.0 else [])
        if top_k is None or top_k != 0:
            warpers.append(TopKLogitsWarper(top_k=50 if top_k is None else top_k))
        if params.top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p=params.top_p))

        def pick(logits, rows: list[Row]):
            probs = torch.softmax(warpers(None, logits), dim=-1)
            return torch.cat([torch.multinomial(p, 1, generator=r.generator) for p, r in zip(probs, rows)])

        return pick

    def _generate(self, batch: Sequence[ChatRequest], prompts: list[str], params: SamplingParams) -> list[Completion]:
        """One `model.generate` call over the batch: every row computed until the last one ends."""
        torch = self._torch
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        sample = params.temperature > 0
        kwargs = dict(max_new_tokens=params.max_new_tokens, do_sample=sample,
                      pad_token_id=self.tokenizer.pad_token_id)
        if sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p)
            torch.manual_seed(batch[0].seed)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        with self._computing():
            out = self.model.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1]:]
        self.stats.forwards += new.shape[1]
        self.stats.prefill_tokens += enc["input_ids"].numel()
        self.stats.row_steps += new.shape[0] * (new.shape[1] - 1)
        results = []
        prompt_tokens = enc["attention_mask"].sum(dim=1).tolist()
        for req, row, n_prompt in zip(batch, new, prompt_tokens):
            ids = row.tolist()
            n = _generated_length(ids, self.tokenizer.pad_token_id, self.tokenizer.eos_token_id)
            text = req.prefill + self.tokenizer.decode(ids[:n], skip_special_tokens=True)
            finished = n < len(ids) or (n > 0 and ids[n - 1] == self.tokenizer.eos_token_id)
            results.append(Completion(req.key, text, n, extra={
                "prompt_tokens": int(n_prompt), "finish_reason": "stop" if finished else "length"}))
        return results

    def close(self) -> None:
        self.model = None


def _greedy(logits, rows: list[Row]):
    """The most likely token per row (as `generate` without sampling)."""
    return logits.argmax(dim=-1)


def _generated_length(ids: list[int], pad_id: int | None, eos_id: int | None) -> int:
    """Tokens up to and including the first EOS (the rest is padding of finished rows)."""
    for i, t in enumerate(ids):
        if t == eos_id:
            return i + 1
        if t == pad_id and pad_id != eos_id:
            return i
    return len(ids)
