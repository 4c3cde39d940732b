"""Local generation with a transformers causal LM (CPU or one GPU), batched with left padding.

This is the backend for small models and for tests (SmolLM2-135M-Instruct on CPU); it is also what
`cpt.synth.server` serves over HTTP. Requests are generated `batch_size` at a time, in order of
prompt length: a batch is padded to its longest prompt and every row of it is computed until the
last row ends, so neighbours in length waste the least. Each batch is seeded from its first
request's seed, so a rerun of the same work samples the same text.
"""
from __future__ import annotations

from typing import Iterator, Sequence

from cpt.synth.generators.base import ChatRequest, Completion, SamplingParams


class TransformersGenerator:
    """`Generator` over `AutoModelForCausalLM.generate`."""

    def __init__(self, model: str, batch_size: int = 8, device: str | None = None,
                 dtype: str = "auto", num_threads: int | None = None, sort_by_length: bool = True) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.num_threads = num_threads
        """Intra-op threads while generating (None: torch's default). On a shared or oversubscribed
        CPU one thread can be several times faster; set only around `generate`, then restored."""
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
        self.name = f"transformers:{model}"

    def prompt_text(self, req: ChatRequest) -> str:
        """The chat template applied: ends with the assistant's header, or with its prefill to continue."""
        if req.prefill:
            return self.tokenizer.apply_chat_template(req.messages, tokenize=False, add_generation_prompt=False,
                                                      continue_final_message=True)
        return self.tokenizer.apply_chat_template(req.messages, tokenize=False, add_generation_prompt=True)

    def generate(self, requests: Sequence[ChatRequest], params: SamplingParams) -> Iterator[Completion]:
        prompts = [self.prompt_text(r) for r in requests]
        order = list(range(len(requests)))
        if self.sort_by_length:
            lengths = [len(ids) for ids in self.tokenizer(prompts, add_special_tokens=False)["input_ids"]]
            order.sort(key=lambda i: lengths[i])
        for i in range(0, len(order), self.batch_size):
            chunk = order[i:i + self.batch_size]
            yield from self._generate([requests[j] for j in chunk], [prompts[j] for j in chunk], params)

    def generate_batch(self, batch: Sequence[ChatRequest], params: SamplingParams) -> list[Completion]:
        """One `generate` call over the whole batch."""
        return self._generate(batch, [self.prompt_text(r) for r in batch], params)

    def _generate(self, batch: Sequence[ChatRequest], prompts: list[str], params: SamplingParams) -> list[Completion]:
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
        previous = torch.get_num_threads()
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        try:
            with torch.inference_mode():
                out = self.model.generate(**enc, **kwargs)
        finally:
            torch.set_num_threads(previous)
        new = out[:, enc["input_ids"].shape[1]:]
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


def _generated_length(ids: list[int], pad_id: int | None, eos_id: int | None) -> int:
    """Tokens up to and including the first EOS (the rest is padding of finished rows)."""
    for i, t in enumerate(ids):
        if t == eos_id:
            return i + 1
        if t == pad_id and pad_id != eos_id:
            return i
    return len(ids)
