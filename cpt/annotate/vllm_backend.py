"""`Scorer` over vLLM's `prompt_logprobs`: the fast path for scoring large corpora on GPUs.

vLLM is imported only here and only when this backend is chosen (it is not a dependency: it pins
its own torch). Each window is sent as a token-id prompt with `max_tokens=1, prompt_logprobs=0`,
which returns the log-probability of every prompt token given the ones before it; vLLM batches and
schedules the requests itself, so no bucketing is done here.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from cpt.annotate.perplexity import BackendUnavailable, Window


class VLLMScorer:
    def __init__(self, model_dir: str, max_length: int | None = None, dtype: str | None = None):
        try:
            from vllm import LLM, SamplingParams
        except ImportError as e:
            raise BackendUnavailable(
                "the vllm scoring backend needs vLLM, which is not installed: on a GPU machine run "
                "`pip install vllm` (it brings its own torch), or use --backend hf") from e
        self._llm = LLM(model=model_dir, dtype=dtype or "bfloat16", max_model_len=max_length,
                        skip_tokenizer_init=True, enable_prefix_caching=False)
        self.max_length = int(self._llm.llm_engine.model_config.max_model_len)
        self._params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0, detokenize=False)

    def score(self, windows: Sequence[Window]) -> tuple[np.ndarray, np.ndarray]:
        prompts = [{"prompt_token_ids": w.tokens.tolist()} for w in windows]
        outputs = self._llm.generate(prompts, self._params, use_tqdm=False)
        sums = np.zeros(len(windows), dtype=np.float64)
        counts = np.array([w.n_targets for w in windows], dtype=np.int64)
        for i, (w, out) in enumerate(zip(windows, outputs)):
            logprobs = out.prompt_logprobs  # [None, {token: Logprob}, ...], one entry per prompt token
            sums[i] = -sum(logprobs[t][int(w.tokens[t])].logprob for t in range(w.first_target, len(w.tokens)))
        return sums, counts
