"""Perplexity of documents under a causal LM: windows, length-bucketed batches, one small interface.

A document's perplexity is exp(mean NLL of its tokens 1..n-1), each token predicted from the ones
before it (token 0 has no context and is not scored). Tokenization is the model tokenizer's own
(`add_special_tokens=True`, so a BOS is prepended where the tokenizer does that by default).

Stride rule for documents longer than the context `L`: windows start at 0, S, 2S, ... (S = stride,
1 <= S < L, default L/2) and each covers at most L tokens. The first window scores its tokens 1..;
every later window scores only the tokens past the previous window's end, so each token is scored
exactly once and, outside the first window, with at least L - S tokens of context. A document that
fits in L tokens is one window and its perplexity is exactly the plain full-context one.

The model sits behind `Scorer.score(windows) -> (nll_sums, counts)`: the transformers backend here,
vLLM's `prompt_logprobs` (cpt.annotate.vllm_backend), and our megatron checkpoints
(megatron_ext.scoring, plugged in by `cpt score`) each implement it.
"""
from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Callable, ClassVar, Protocol, Sequence

import numpy as np

from cpt.annotate.docs import Doc
from cpt.annotate.modelfiles import check_model_dir, check_tokenizer_dir, pick_device
from cpt.annotate.store import Result


@dataclass(frozen=True, slots=True)
class Window:
    tokens: np.ndarray
    """Token ids (int64) fed to the model, at most the context length."""
    first_target: int
    """Index of the first token whose NLL counts; tokens before it are context only (>= 1)."""

    @property
    def n_targets(self) -> int:
        return len(self.tokens) - self.first_target


class Scorer(Protocol):
    """What a scoring engine implements; the annotator does tokenization, windows and aggregation."""

    max_length: int
    """Context length: no window is longer."""

    def score(self, windows: Sequence[Window]) -> tuple[np.ndarray, np.ndarray]:
        """Sum of NLL (nats, float64) and number of scored tokens (int64) of each window."""
        ...


def make_windows(ids: Sequence[int], max_length: int, stride: int) -> list[Window]:
    """Cut one document's tokens into windows by the stride rule above."""
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    if not 1 <= stride < max_length:
        raise ValueError(f"stride must be in [1, max_length) = [1, {max_length}), got {stride}")
    ids = np.asarray(ids, dtype=np.int64)
    n = len(ids)
    if n < 2:
        return []
    windows, begin, prev_end = [], 0, 1
    while prev_end < n:
        end = min(begin + max_length, n)
        windows.append(Window(ids[begin:end], prev_end - begin))
        prev_end, begin = end, begin + stride
    return windows


def bucket_batches(lengths: Sequence[int], max_batch_tokens: int) -> list[list[int]]:
    """Group window indices into batches of similar length with at most `max_batch_tokens` padded tokens
    (a window longer than that is a batch of its own).

    Longest first (so a too-large batch fails at once, not after an hour); ties keep input order, so
    the batches - and the floating point sums - are the same on every run.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_batch_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


CPU_BATCH_TOKENS = 512
"""Padded tokens per forward pass on CPU (the default policy)."""


def default_max_batch_tokens(device: str, gpu_tokens: int) -> int:
    """The batching policy by device, when the user sets no --max-batch-tokens.

    GPU: length-bucketed batches of up to `gpu_tokens` tokens. CPU: small buckets, up to
    CPU_BATCH_TOKENS (a longer window runs alone): without an attention mask (see
    HFScorer._score_batch) a few short windows together run their matmuls at a higher rate than one
    at a time, but larger batches push the activations out of the CPU's caches and then run slower
    than the per-document loop (benchmarks/bench_score.py compares both with it)."""
    return gpu_tokens if device.startswith("cuda") else CPU_BATCH_TOKENS


class BucketedScorer(abc.ABC):
    """A Scorer that scores windows in length-bucketed batches of at most `max_batch_tokens`
    tokens; a model backend implements `_score_batch` (summed NLL per window of one batch)."""

    max_length: int
    max_batch_tokens: int

    def score(self, windows: Sequence[Window]) -> tuple[np.ndarray, np.ndarray]:
        sums = np.zeros(len(windows), dtype=np.float64)
        counts = np.array([w.n_targets for w in windows], dtype=np.int64)
        for batch in bucket_batches([len(w.tokens) for w in windows], self.max_batch_tokens):
            sums[batch] = self._score_batch([windows[i] for i in batch])
        return sums, counts

    def _check_batch_tokens(self) -> None:
        """A budget the user gave must hold a whole window (what a GPU's memory is sized for); the
        default policy's CPU budget may be smaller (a longer window then runs alone)."""
        if self.max_batch_tokens < self.max_length:
            raise ValueError(f"max_batch_tokens ({self.max_batch_tokens}) must be >= max_length ({self.max_length})")

    @abc.abstractmethod
    def _score_batch(self, windows: Sequence[Window]) -> np.ndarray:
        """Summed NLL of each window's scored tokens, for one batch."""

    def _longest(self, windows: Sequence[Window]) -> int:
        longest = max(len(w.tokens) for w in windows)
        if longest > self.max_length:
            raise ValueError(f"a window of {longest} tokens exceeds max_length {self.max_length}")
        return longest


class HFScorer(BucketedScorer):
    """`Scorer` over a local transformers causal LM folder (fp32 on CPU, bf16 on GPU by default)."""

    def __init__(self, model_dir: str, device: str | None = None, dtype: str | None = None,
                 max_length: int | None = None, max_batch_tokens: int | None = None,
                 head_chunk: int = 2048):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        check_model_dir(model_dir, "causal LM")
        self.device = pick_device(device)
        self._torch = torch
        dtype = dtype or ("bfloat16" if self.device.startswith("cuda") else "float32")
        config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
        context = int(getattr(config, "max_position_embeddings", 0) or 2048)
        self.max_length = min(max_length or context, context)
        self.max_batch_tokens = max_batch_tokens or default_max_batch_tokens(self.device, 65536)
        if max_batch_tokens:
            self._check_batch_tokens()
        self.model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=getattr(torch, dtype), local_files_only=True).to(self.device).eval()
        self.head_chunk = head_chunk
        self.pad_id = 0
        self._split = self._split_matches_full()

    def _split_matches_full(self) -> bool:
        """Whether base model + output head reproduces the full forward's logits.

        Running the output head only on the positions that are scored, a chunk at a time, avoids a
        [batch, length, vocab] float32 tensor; models that post-process logits (soft-capping,
        scaling) fail this probe and take the plain full-logits path instead.
        """
        torch = self._torch
        ids = torch.arange(1, 9, device=self.device)[None] % self.model.config.vocab_size
        with torch.inference_mode():
            full = self.model(input_ids=ids).logits.float()
            body = self.model.base_model
            head = self.model.get_output_embeddings()
            if head is None:
                return False
            split = head(body(input_ids=ids).last_hidden_state).float()
        return bool(torch.allclose(full, split, rtol=1e-3, atol=1e-3))

    def _score_batch(self, windows: Sequence[Window]) -> np.ndarray:
        """Right-padded batch, no attention mask: the model is causal, so padding after a window
        never reaches its positions, and without a mask attention takes its causal fast path. No
        KV cache is built (nothing is generated)."""
        torch = self._torch
        longest = self._longest(windows)
        ids = torch.full((len(windows), longest), self.pad_id, dtype=torch.long)
        scored = torch.zeros((len(windows), longest - 1), dtype=torch.bool)
        for row, w in enumerate(windows):
            ids[row, :len(w.tokens)] = torch.from_numpy(w.tokens)
            scored[row, w.first_target - 1:len(w.tokens) - 1] = True  # position t-1 predicts token t
        ids, scored = ids.to(self.device), scored.to(self.device)
        targets = ids[:, 1:][scored]
        rows = torch.arange(len(windows), device=self.device)[:, None].expand_as(scored)[scored]
        with torch.inference_mode():
            if self._split:
                body = self.model.base_model
                hidden = body(input_ids=ids, use_cache=False).last_hidden_state[:, :-1][scored]
                head = self.model.get_output_embeddings()
                nll = torch.cat([
                    torch.nn.functional.cross_entropy(head(hidden[k:k + self.head_chunk]).float(),
                                                      targets[k:k + self.head_chunk], reduction="none")
                    for k in range(0, len(targets), self.head_chunk)])
            else:
                logits = self.model(input_ids=ids, use_cache=False).logits[:, :-1][scored].float()
                nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
            sums = torch.zeros(len(windows), dtype=torch.float64, device=self.device)
            sums.index_add_(0, rows, nll.double())
        return sums.cpu().numpy()


Encode = Callable[[list[str]], list[list[int]]]


def hf_encoder(model_dir: str) -> Encode:
    """The model folder's own tokenizer, with its default special tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)

    def encode(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, add_special_tokens=True)["input_ids"]

    return encode


class PerplexityAnnotator:
    """Annotator filling `ppl`; documents that are empty or have < 2 tokens are skipped, by reason."""

    columns = ("ppl",)

    def __init__(self, scorer: Scorer, encode: Encode, stride: int | None = None,
                 max_doc_tokens: int | None = None):
        self.scorer, self.encode = scorer, encode
        self.stride = stride or max(1, scorer.max_length // 2)
        self.max_doc_tokens = max_doc_tokens
        make_windows([0, 0], scorer.max_length, self.stride)  # validate stride now, not mid-run

    def __call__(self, docs: Sequence[Doc]) -> list[Result]:
        results: list[Result | None] = [None] * len(docs)
        todo = []
        for i, doc in enumerate(docs):
            if not doc.text.strip():
                results[i] = Result(doc.doc_id, None, "empty")
            else:
                todo.append(i)
        encoded = self.encode([docs[i].text for i in todo]) if todo else []
        windows: list[Window] = []
        owner: list[int] = []
        for i, ids in zip(todo, encoded):
            if self.max_doc_tokens:
                ids = ids[:self.max_doc_tokens]
            doc_windows = make_windows(ids, self.scorer.max_length, self.stride)
            if not doc_windows:
                results[i] = Result(docs[i].doc_id, None, "too_few_tokens")
            windows += doc_windows
            owner += [i] * len(doc_windows)
        if windows:
            sums, counts = self.scorer.score(windows)
            nll = np.zeros(len(docs))
            n = np.zeros(len(docs), dtype=np.int64)
            np.add.at(nll, owner, sums)
            np.add.at(n, owner, counts)
            for i in sorted(set(owner)):
                results[i] = Result(docs[i].doc_id, {"ppl": math.exp(nll[i] / n[i])})
        return [r for r in results if r is not None]


class BackendUnavailable(RuntimeError):
    """A scoring backend's library is not installed; the message says what to install."""


@dataclass(frozen=True)
class PerplexityAnnotatorFactory:
    """Picklable recipe for the scoring annotator (built once per worker process).

    `backend` is `hf` (transformers), `vllm` (prompt_logprobs; GPU machines with vLLM installed) or
    `package.module:callable`, called as `callable(model_dir, max_length=, device=, dtype=,
    max_batch_tokens=)` and returning a `Scorer` - the seam our megatron checkpoints come through
    (`megatron_ext.scoring:MegatronScorer`, chosen by `cpt score`), so this module never imports
    megatron. Documents are tokenized with the HF tokenizer in `tokenizer_dir` (default: the model
    folder itself).
    """

    columns: ClassVar[tuple[str, ...]] = PerplexityAnnotator.columns
    model_dir: str
    backend: str = "hf"
    device: str | None = None
    dtype: str | None = None
    max_length: int | None = None
    stride: int | None = None
    max_batch_tokens: int | None = None
    max_doc_tokens: int | None = None
    tokenizer_dir: str | None = None

    def build_scorer(self) -> Scorer:
        if self.backend == "hf":
            return HFScorer(self.model_dir, self.device, self.dtype, self.max_length, self.max_batch_tokens)
        if self.backend == "vllm":
            from cpt.annotate.vllm_backend import VLLMScorer

            return VLLMScorer(self.model_dir, self.max_length, self.dtype)
        if ":" in self.backend:
            import importlib

            module, _, name = self.backend.partition(":")
            return getattr(importlib.import_module(module), name)(
                self.model_dir, max_length=self.max_length, device=self.device, dtype=self.dtype,
                max_batch_tokens=self.max_batch_tokens)
        raise ValueError(f"unknown scoring backend {self.backend!r}: use hf, vllm or package.module:callable")

    def sources(self) -> tuple[str, ...]:
        """What the scorer and tokenizer are read from (`cpt.annotate.model_cache` keys on their files)."""
        return (self.model_dir,) + ((self.tokenizer_dir,) if self.tokenizer_dir else ())

    def check(self) -> None:
        """Fail on missing files or bad lengths before any model loads."""
        if self.backend in ("hf", "vllm"):
            check_model_dir(self.model_dir, "causal LM")
        if self.tokenizer_dir:
            check_tokenizer_dir(self.tokenizer_dir)
        if self.max_length and self.stride:
            make_windows([0, 0], self.max_length, self.stride)

    def __call__(self) -> PerplexityAnnotator:
        self.check()
        scorer = self.build_scorer()
        return PerplexityAnnotator(scorer, hf_encoder(self.tokenizer_dir or self.model_dir), self.stride,
                                   self.max_doc_tokens)
