"""vLLM's offline batch engine (`vllm.LLM`) for GPU throughput; imported only when installed.

vLLM schedules the whole list of conversations itself (continuous batching), so `generate` hands it
everything at once and yields the results in order. A prefilled request (its last message the
assistant's) is continued with vLLM's own `continue_final_message`. Nothing here runs on a machine without vLLM:
`is_available()` checks for the package without importing it, and the constructor raises
`GeneratorUnavailable` with the install command.
"""
from __future__ import annotations

import importlib.util
from typing import Iterator, Sequence

from cpt.synth.generators.base import ChatRequest, Completion, GeneratorUnavailable, SamplingParams


def is_available() -> bool:
    """Whether vLLM is installed (found without importing it: importing initializes CUDA)."""
    return importlib.util.find_spec("vllm") is not None


class VLLMGenerator:
    """`Generator` over `vllm.LLM.chat`."""

    def __init__(self, model: str, tensor_parallel_size: int = 1, dtype: str = "auto",
                 max_model_len: int | None = None, gpu_memory_utilization: float = 0.9) -> None:
        if not is_available():
            raise GeneratorUnavailable(
                "the vllm backend needs vLLM, which is not installed here; on a GPU machine run "
                "`pip install vllm`, or serve the model with any OpenAI-compatible server and use "
                "--generator openai --base-url URL"
            )
        from vllm import LLM

        kwargs = dict(model=model, tensor_parallel_size=tensor_parallel_size, dtype=dtype,
                      gpu_memory_utilization=gpu_memory_utilization)
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        self.llm = LLM(**kwargs)
        self.name = f"vllm:{model}"

    def generate(self, requests: Sequence[ChatRequest], params: SamplingParams) -> Iterator[Completion]:
        """Requests with a prefill and those without go to `LLM.chat` separately (the flag is per call)."""
        for continues in (False, True):
            group = [r for r in requests if bool(r.prefill) == continues]
            if group:
                yield from self._chat(group, params, continues)

    def _chat(self, requests: Sequence[ChatRequest], params: SamplingParams, continues: bool) -> Iterator[Completion]:
        from vllm import SamplingParams as VLLMSamplingParams

        per_request = [
            VLLMSamplingParams(max_tokens=params.max_new_tokens, temperature=params.temperature,
                               top_p=params.top_p, seed=r.seed)
            for r in requests
        ]
        outputs = self.llm.chat([r.messages for r in requests], per_request, use_tqdm=False,
                                add_generation_prompt=not continues, continue_final_message=continues)
        for req, out in zip(requests, outputs):
            first = out.outputs[0]
            yield Completion(req.key, req.prefill + first.text, len(first.token_ids))

    def close(self) -> None:
        self.llm = None
