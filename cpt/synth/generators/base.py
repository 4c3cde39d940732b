"""The one interface every generator backend implements.

A backend takes chat requests and yields completions as they finish (in any order: a server
backend completes concurrently), so the caller can journal each one at once and a killed run loses
at most the requests in flight. A request that failed for good comes back with `error` set instead
of raising, so one bad request does not end a run of thousands; it is counted and retried by the
next run because nothing was journaled for it.

A request whose last message is the assistant's is a prefill: the backend continues that text
(the chat template's `continue_final_message`), and the completion's `text` starts with it, so
whoever parses the completion sees the whole assistant turn whatever the backend.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol, Sequence


@dataclass(frozen=True, slots=True, kw_only=True)
class SamplingParams:
    """Sampling settings shared by all backends (the recipe's `synth.sampling` block)."""

    max_new_tokens: int = 512
    """Most tokens generated per request."""
    temperature: float = 0.7
    """0 means greedy decoding."""
    top_p: float = 0.95
    """Nucleus sampling mass."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One prompt to complete."""

    key: str
    """The record key it belongs to; completions carry it back."""
    messages: list[dict[str, str]]
    """OpenAI-style chat messages."""
    seed: int = 0
    """Per-request sampling seed (derived from the key, so reruns sample alike where supported)."""

    @property
    def prefill(self) -> str:
        """The start of the assistant turn to continue (a last message of role assistant), else ''."""
        return prefill_of(self.messages)


def prefill_of(messages: Sequence[dict[str, str]]) -> str:
    """The content of a final assistant message: the text a generator continues rather than answers."""
    return messages[-1]["content"] if messages and messages[-1].get("role") == "assistant" else ""


@dataclass(frozen=True, slots=True)
class Completion:
    """A finished request: its text and generated-token count, or why it failed."""

    key: str
    text: str = ""
    n_tokens: int = 0
    error: str | None = None
    attempts: int = 1
    extra: dict = field(default_factory=dict)


class GeneratorUnavailable(RuntimeError):
    """A backend's library is not installed; the message says what to install."""


class Generator(Protocol):
    """A text generator backend."""

    name: str
    """`backend:model`, written into every record."""

    def generate(self, requests: Sequence[ChatRequest], params: SamplingParams) -> Iterator[Completion]:
        """Complete every request once, yielding each completion as soon as it is done."""
        ...

    def close(self) -> None:
        """Free the model or connections."""
        ...
