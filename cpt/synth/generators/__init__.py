"""Generator backends behind one interface (`base.Generator`), built by name in one place."""
from __future__ import annotations

from cpt.synth.generators.base import (ChatRequest, Completion, Generator, GeneratorUnavailable,
                                       SamplingParams)

BACKENDS = ("transformers", "vllm", "openai")


def build_generator(backend: str, model: str, *, batch_size: int = 8, base_url: str | None = None,
                    api_key: str = "EMPTY", concurrency: int = 8, timeout_s: float = 120.0,
                    max_retries: int = 4, backoff_s: float = 1.0,
                    tensor_parallel_size: int = 1, num_threads: int | None = None,
                    continue_final_message: bool = False, decode: str = "refill") -> Generator:
    """The backend called `backend`; heavy libraries are imported only for the one chosen."""
    if backend == "transformers":
        from cpt.synth.generators.transformers_backend import TransformersGenerator

        return TransformersGenerator(model, batch_size=batch_size, num_threads=num_threads, decode=decode)
    if backend == "vllm":
        from cpt.synth.generators.vllm_backend import VLLMGenerator

        return VLLMGenerator(model, tensor_parallel_size=tensor_parallel_size)
    if backend == "openai":
        if not base_url:
            raise ValueError("the openai backend needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        from cpt.synth.generators.openai_backend import OpenAIGenerator

        return OpenAIGenerator(model, base_url, api_key=api_key, concurrency=concurrency,
                               timeout_s=timeout_s, max_retries=max_retries, backoff_s=backoff_s,
                               continue_final_message=continue_final_message)
    raise ValueError(f"unknown generator {backend!r}; choose from {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "ChatRequest", "Completion", "Generator", "GeneratorUnavailable",
           "SamplingParams", "build_generator"]
