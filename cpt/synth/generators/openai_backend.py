"""Any OpenAI-compatible chat server (vLLM, SGLang, TGI, `cpt.synth.server`) through `openai`.

Requests run on a thread pool of `concurrency` workers, each with a per-request `timeout`. A
timeout, a connection error, HTTP 429 or a 5xx is retried up to `max_retries` times with
exponential backoff and jitter (`backoff_s * 2**attempt`, capped at `max_backoff_s`); other errors
(400, 401, 404: the request itself is wrong) fail at once. The client's own retries are switched
off so these are the only ones, and counted.

A prefill (a request whose last message is the assistant's) needs a server that continues it: the
OpenAI API itself has no such field. With `continue_final_message=True` the request carries vLLM's
extension (`continue_final_message: true, add_generation_prompt: false`; vLLM, SGLang and
`cpt.synth.server` accept it) and the completion's text is the prefill plus the server's
continuation. Without it the prefill message is not sent: the request is the plain chat it was
before prefills existed, and a line on stderr says so once.
"""
from __future__ import annotations

import random
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Iterator, Sequence

from cpt.synth.generators.base import ChatRequest, Completion, GeneratorUnavailable, SamplingParams


class OpenAIGenerator:
    """`Generator` over `client.chat.completions.create`."""

    def __init__(self, model: str, base_url: str, api_key: str = "EMPTY", concurrency: int = 8,
                 timeout_s: float = 120.0, max_retries: int = 4, backoff_s: float = 1.0,
                 max_backoff_s: float = 30.0, continue_final_message: bool = False) -> None:
        try:
            import openai
        except ImportError:
            raise GeneratorUnavailable(
                "the openai backend needs the `openai` package: pip install 'cpt[synth]' (or pip install openai)"
            ) from None
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self._openai = openai
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)
        self.model = model
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.continue_final_message = continue_final_message
        """The server continues a final assistant message (vLLM's request extension)."""
        self._told_no_prefill = False
        self.retries = 0
        """Retries made so far (all requests), for the run summary."""
        self.name = f"openai:{model}"

    def _retryable(self, exc: Exception) -> bool:
        o = self._openai
        if isinstance(exc, (o.APITimeoutError, o.APIConnectionError, o.RateLimitError, o.InternalServerError)):
            return True
        return isinstance(exc, o.APIStatusError) and exc.status_code >= 500

    def _request(self, req: ChatRequest) -> tuple[list[dict], dict | None, str]:
        """(messages, extra body, prefix of the text): how a prefill travels to this server, if at all."""
        if not req.prefill:
            return req.messages, None, ""
        if self.continue_final_message:
            return req.messages, {"continue_final_message": True, "add_generation_prompt": False}, req.prefill
        if not self._told_no_prefill:
            self._told_no_prefill = True
            print(f"[synth] {self.name}: prefill {req.prefill!r} not sent (the server is not known to continue "
                  f"an assistant message; --continue-final-message if it accepts vLLM's field)",
                  file=sys.stderr, flush=True)
        return req.messages[:-1], None, ""

    def complete(self, req: ChatRequest, params: SamplingParams) -> Completion:
        """One request with retries; never raises for API errors (they come back in `error`)."""
        messages, extra_body, prefix = self._request(req)
        for attempt in range(self.max_retries + 1):
            try:
                resp = self.client.chat.completions.create(
                    model=self.model, messages=messages, max_tokens=params.max_new_tokens,
                    temperature=params.temperature, top_p=params.top_p, seed=req.seed, extra_body=extra_body,
                )
            except self._openai.OpenAIError as exc:
                if attempt < self.max_retries and self._retryable(exc):
                    self.retries += 1
                    delay = min(self.max_backoff_s, self.backoff_s * 2 ** attempt)
                    time.sleep(delay * (0.5 + random.random() / 2))
                    continue
                return Completion(req.key, error=f"{type(exc).__name__}: {exc}", attempts=attempt + 1)
            choice = resp.choices[0]
            text = prefix + (choice.message.content or "")
            tokens = resp.usage.completion_tokens if resp.usage else 0
            return Completion(req.key, text, tokens, attempts=attempt + 1)
        raise AssertionError("unreachable: the loop returns on its last attempt")

    def generate(self, requests: Sequence[ChatRequest], params: SamplingParams) -> Iterator[Completion]:
        """Keep at most `concurrency` requests in flight; yield each as it completes."""
        pending = list(reversed(requests))
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="synth-openai") as pool:
            running: set[Future] = set()
            while pending or running:
                while pending and len(running) < self.concurrency:
                    running.add(pool.submit(self.complete, pending.pop(), params))
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()

    def close(self) -> None:
        self.client.close()
