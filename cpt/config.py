"""The recipe schema: one YAML file describes a run; `key.path=value` arguments override it.

Each component owns a kw-only, slotted dataclass whose fields carry a one-line `doc` (shown by
`cpt train --describe`). Loading validates everything at once and raises `RecipeError` with one
line naming the key: unknown keys (with a suggestion), wrong types, impossible values, and
conflicting fields (both named). Checks that need the world size (parallel layout) run in
`Recipe.check_world_size`, called by the trainer before anything is built.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import yaml


class RecipeError(ValueError):
    """A recipe problem; the message is one line that names the key."""


def _f(default: Any = dataclasses.MISSING, doc: str = "", **kwargs: Any) -> Any:
    if isinstance(default, (list, dict)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata={"doc": doc}, **kwargs)
    return field(default=default, metadata={"doc": doc}, **kwargs)


def _require(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise RecipeError(f"{key}: {message}")


@dataclass(kw_only=True, slots=True)
class RopeScalingConfig:
    """Llama-3 style RoPE frequency scaling (rope_type 'llama3' in HF configs)."""

    factor: float = _f(8.0, "scale of the low frequencies")
    low_freq_factor: float = _f(1.0, "wavelength threshold factor for low frequencies")
    high_freq_factor: float = _f(4.0, "wavelength threshold factor for high frequencies")
    original_max_position_embeddings: int = _f(8192, "context length the base model was trained at")


@dataclass(kw_only=True, slots=True)
class ModelConfig:
    """A Llama-family decoder: RMSNorm, SwiGLU, RoPE, grouped-query attention, no biases."""

    num_layers: int = _f(doc="transformer layers")
    hidden_size: int = _f(doc="model width")
    ffn_hidden_size: int = _f(doc="SwiGLU inner width")
    num_attention_heads: int = _f(doc="query heads")
    num_query_groups: Optional[int] = _f(None, "key/value heads (GQA); null means one per query head")
    vocab_size: int = _f(doc="tokenizer vocabulary size (padded for TP by make_vocab_size_divisible_by)")
    max_position_embeddings: int = _f(4096, "longest sequence RoPE is built for")
    rotary_base: float = _f(10000.0, "RoPE base (theta)")
    rope_scaling: Optional[RopeScalingConfig] = _f(None, "Llama-3 RoPE scaling; null for none")
    norm_epsilon: float = _f(1e-5, "RMSNorm epsilon")
    tie_embeddings: bool = _f(False, "share input embedding and output layer weights")
    qkv_bias: bool = _f(False, "biases on the q/k/v projections (Qwen2)")
    init_method_std: float = _f(0.02, "std of the normal init (output projections scaled by 1/sqrt(2L))")
    make_vocab_size_divisible_by: int = _f(128, "pad the vocabulary to a multiple of this times TP")
    attention_backend: Literal["auto", "sdpa", "local", "te"] = _f(
        "auto", "core attention: auto = TransformerEngine when installed, else torch SDPA"
    )

    def __post_init__(self) -> None:
        for name in ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "vocab_size"):
            _require(getattr(self, name) > 0, f"model.{name}", "must be > 0")
        _require(
            self.hidden_size % self.num_attention_heads == 0,
            "model.hidden_size",
            f"{self.hidden_size} is not divisible by model.num_attention_heads={self.num_attention_heads}",
        )
        if self.num_query_groups is not None:
            _require(
                self.num_query_groups > 0 and self.num_attention_heads % self.num_query_groups == 0,
                "model.num_query_groups",
                f"{self.num_query_groups} must divide model.num_attention_heads={self.num_attention_heads}",
            )

    @property
    def query_groups(self) -> int:
        return self.num_query_groups or self.num_attention_heads


@dataclass(kw_only=True, slots=True)
class ParallelConfig:
    """How the model is split; data parallel size is what remains of the world size."""

    tensor_model_parallel_size: int = _f(1, "tensor parallel size (TP)")
    pipeline_model_parallel_size: int = _f(1, "pipeline parallel size (PP)")
    sequence_parallel: bool = _f(False, "shard norms/dropout activations along the sequence (needs TP > 1)")
    use_distributed_optimizer: bool = _f(True, "shard optimizer state across data-parallel ranks")
    optimizer_checkpoint: Literal["dp_reshardable", "fully_reshardable"] = _f(
        "dp_reshardable", "how checkpoints hold the distributed optimizer's state. dp_reshardable: each rank "
                          "writes its own shard, no gather or copy; a resume may change DP, not TP/PP. "
                          "fully_reshardable: every save gathers the state per parameter over DP on each rank "
                          "(12 bytes per parameter of the rank's TP/PP part in host memory, whatever DP); a "
                          "resume may change TP and PP too. A checkpoint loads in the form it was saved in")
    overlap_grad_reduce: bool = _f(False, "overlap the gradient reduce-scatter with the backward pass")
    recompute: Literal["none", "full", "selective"] = _f("none", "activation recomputation")

    def __post_init__(self) -> None:
        _require(self.tensor_model_parallel_size >= 1, "parallel.tensor_model_parallel_size", "must be >= 1")
        _require(self.pipeline_model_parallel_size >= 1, "parallel.pipeline_model_parallel_size", "must be >= 1")
        _require(
            not self.sequence_parallel or self.tensor_model_parallel_size > 1,
            "parallel.sequence_parallel",
            "needs parallel.tensor_model_parallel_size > 1",
        )


@dataclass(kw_only=True, slots=True)
class OptimizerConfig:
    """AdamW with decoupled weight decay and global-norm gradient clipping."""

    weight_decay: float = _f(0.1, "decoupled weight decay (not applied to norms and biases)")
    adam_beta1: float = _f(0.9, "AdamW beta1")
    adam_beta2: float = _f(0.95, "AdamW beta2")
    adam_eps: float = _f(1e-8, "AdamW epsilon")
    clip_grad: float = _f(1.0, "clip the global gradient norm to this; 0 disables")

    def __post_init__(self) -> None:
        for name in ("adam_beta1", "adam_beta2"):
            _require(0.0 <= getattr(self, name) < 1.0, f"optimizer.{name}", "must be in [0, 1)")
        _require(self.adam_eps > 0, "optimizer.adam_eps", "must be > 0")
        _require(self.weight_decay >= 0, "optimizer.weight_decay", "must be >= 0")
        _require(self.clip_grad >= 0, "optimizer.clip_grad", "must be >= 0")


@dataclass(kw_only=True, slots=True)
class ScheduleConfig:
    """Warmup-stable-decay learning rate, defined in consumed tokens (see cpt.train.schedule)."""

    lr_init: float = _f(1e-7, "learning rate at token 0")
    lr_max: float = _f(1e-5, "learning rate after warmup and during the stable phase")
    lr_min: float = _f(1e-6, "learning rate at the end of decay and afterwards")
    warmup_tokens: int = _f(0, "tokens of linear warmup from lr_init to lr_max")
    stable_tokens: Optional[int] = _f(0, "tokens at lr_max after warmup; null = up to the decay that ends with "
                                         "this stage's last step (set when the stage starts)")
    decay_tokens: int = _f(0, "tokens of decay from lr_max to lr_min after the stable phase")
    decay_style: Literal["linear", "cosine", "1-sqrt"] = _f("linear", "shape of the decay phase")

    def __post_init__(self) -> None:
        for name in ("warmup_tokens", "stable_tokens", "decay_tokens"):
            _require((getattr(self, name) or 0) >= 0, f"schedule.{name}", "must be >= 0")
        for name in ("lr_init", "lr_max", "lr_min"):
            _require(getattr(self, name) >= 0, f"schedule.{name}", "must be >= 0")
        _require(
            self.lr_min <= self.lr_max,
            "schedule.lr_min",
            f"{self.lr_min} is above schedule.lr_max={self.lr_max}",
        )


@dataclass(kw_only=True, slots=True)
class StreamSpec:
    """One training stream: documents of cpt shards chosen by a metadata filter, in an order
    (field names as in cpt.sampling.StreamConfig)."""

    name: str = _f(doc="stream name; mixture weights and hooks refer to it")
    prefixes: list[str] = _f(doc="cpt shard prefixes the documents come from")
    weight: float = _f(doc="initial mixture weight (normalised over streams)")
    filter: Optional[str] = _f(None, 'metadata condition, e.g. lang == "zh" and topic == "math"; null = all')
    order: Literal["shuffle", "ppl_asc", "ppl_desc"] = _f("shuffle", "document order: seeded shuffle or by perplexity")
    seed: int = _f(1234, "seed of the shuffle order (and of the order within each band of ppl_bands)")
    ppl_bands: int = _f(1, "ppl orders: read the sorted documents in this many equal-count bands, easy to hard "
                           "(or hard to easy), each in a seeded random order; 1 = strict order")
    on_exhausted: Literal["next_epoch", "stop"] = _f("next_epoch", "at the end of the documents")
    valid_holdout: Optional[float] = _f(None, "this stream's held-out share; null = data.valid_holdout; 0 = not "
                                              "validated (a stream too small to spare documents trains on all)")


def holdout_share(stream: StreamSpec, default: float) -> float:
    """The stream's own `valid_holdout`, else `default` (data.valid_holdout): the one rule training
    and `cpt eval ppl` both use."""
    return default if stream.valid_holdout is None else stream.valid_holdout


@dataclass(kw_only=True, slots=True)
class DataConfig:
    """Training data: Megatron shard prefixes blended with fixed weights (`blend`), or streams of cpt
    shards drawn by the dynamic Blender (`streams`, whose weights may change during the run)."""

    blend: list[list[Any]] = _f([], "[[prefix, weight], ...]: training shards and their weights")
    streams: list[StreamSpec] = _f([], "training streams (instead of blend): see StreamSpec")
    valid_blend: list[list[Any]] = _f([], "[[prefix, weight], ...]: validation shards; empty = none")
    reset_position_ids: bool = _f(False, "restart position ids at every end-of-document token")
    reset_attention_mask: bool = _f(False, "block attention across end-of-document tokens")
    eod_mask_loss: bool = _f(False, "no loss on the end-of-document token")
    eod_token_id: Optional[int] = _f(None, "end-of-document token id (needed by the three options above)")
    num_workers: int = _f(0, "data loader worker processes")
    valid_holdout: float = _f(0.0, "share of each stream's documents held out for per-stream validation; 0 = none")
    valid_holdout_seed: int = _f(0, "seed of the held-out split (by doc_id hash: the same documents every run)")
    cache_dir: Optional[str] = _f(None, "where sample index caches go; null = <output_dir>/data_cache")

    def __post_init__(self) -> None:
        for key in ("blend", "valid_blend"):
            for i, entry in enumerate(getattr(self, key)):
                ok = (
                    isinstance(entry, (list, tuple)) and len(entry) == 2
                    and isinstance(entry[0], str) and isinstance(entry[1], (int, float)) and entry[1] >= 0
                )
                _require(ok, f"data.{key}[{i}]", f"expected [prefix, weight >= 0], got {entry!r}")
        _require(
            not (self.blend and self.streams),
            "data.streams",
            "and data.blend are alternatives; give one of them",
        )
        names = [st.name for st in self.streams]
        _require(len(set(names)) == len(names), "data.streams", f"stream names must be unique, got {names}")
        for i, st in enumerate(self.streams):
            _require(bool(st.name), f"data.streams[{i}].name", "must be non-empty")
            _require(bool(st.prefixes), f"data.streams[{i}].prefixes", "needs at least one shard prefix")
            _require(st.weight >= 0, f"data.streams[{i}].weight", "must be >= 0")
            _require(st.valid_holdout is None or 0.0 <= st.valid_holdout < 1.0, f"data.streams[{i}].valid_holdout",
                     "must be in [0, 1) or null")
            _require(st.ppl_bands >= 1, f"data.streams[{i}].ppl_bands", f"must be >= 1, got {st.ppl_bands}")
            _require(st.ppl_bands == 1 or st.order != "shuffle", f"data.streams[{i}].ppl_bands",
                     f"{st.ppl_bands} bands need order ppl_asc or ppl_desc (the order is shuffle)")
        _require(
            not self.streams or sum(st.weight for st in self.streams) > 0,
            "data.streams",
            "weights must not all be zero",
        )
        needs_eod = self.reset_position_ids or self.reset_attention_mask or self.eod_mask_loss
        _require(
            not needs_eod or self.eod_token_id is not None,
            "data.eod_token_id",
            "is required by data.reset_position_ids / reset_attention_mask / eod_mask_loss",
        )
        _require(self.num_workers >= 0, "data.num_workers", "must be >= 0")
        _require(0.0 <= self.valid_holdout < 1.0, "data.valid_holdout", "must be in [0, 1)")
        _require(
            self.valid_holdout == 0.0 or bool(self.streams),
            "data.valid_holdout",
            "needs data.streams (per-stream validation splits the streams' documents)",
        )


@dataclass(kw_only=True, slots=True)
class TrainingConfig:
    """Batch geometry, budget, precision, logging, evaluation and checkpoint cadence."""

    output_dir: str = _f("runs/run", "run folder: checkpoints/, tensorboard/, metrics.jsonl")
    stage: str = _f("main", "stage name; loading another stage's checkpoint starts this stage from it")
    seed: int = _f(1234, "seed for init, dropout and data order")
    seq_length: int = _f(8192, "tokens per sample")
    micro_batch_size: int = _f(1, "samples per forward pass per data-parallel rank")
    global_batch_size: int = _f(8, "samples per optimizer step over all data-parallel ranks")
    train_tokens: Optional[int] = _f(None, "token budget of this run (rounded up to whole steps); null with "
                                           "train_passes")
    train_passes: dict[str, float] = _f({}, "{STREAM: N} instead of train_tokens: the budget that reads that "
                                            "training stream's documents N times at its initial share (whole "
                                            "steps, rounded down), e.g. one pass over a sample whatever the "
                                            "tokenizer; resolved when the run starts (cpt.train.budget)")
    precision: Literal["bf16", "fp32"] = _f("bf16", "parameter/compute dtype (fp32 master weights with bf16)")
    nan_policy: Literal["skip", "stop"] = _f("stop", "non-finite loss or grad norm: skip the step, or stop")
    max_skipped_steps: int = _f(10, "with nan_policy=skip: stop after this many skipped steps in a row")
    log_every: int = _f(1, "steps between log lines")
    eval_every: int = _f(0, "steps between validation runs; 0 = only at the end when valid data exists")
    eval_at_start: bool = _f(False, "validate before the stage's first step: the plots' baseline and the mixture "
                                    "controllers' first reference (not repeated when the stage resumes)")
    eval_batches: int = _f(4, "global batches per validation run")
    eval_batches_per_stream: int = _f(1, "global batches per stream per validation run (data.valid_holdout > 0)")
    save_every: int = _f(0, "steps between checkpoints; 0 = only at the end")
    keep_last: int = _f(0, "complete checkpoints kept, newest first (older ones deleted after each save); 0 = keep all")
    keep_every: int = _f(0, "with keep_last: also keep checkpoints whose step is a multiple of this; 0 = none")
    fully_parallel_load: bool = _f(False, "at a resume, read each shard every data-parallel rank needs alike (the "
                                          "weights) on one rank and send it to the others: the checkpoint is read "
                                          "about once, not DP times (a shared file system at scale); costs an "
                                          "exchange over DP and some memory at load")
    device: Literal["auto", "cuda", "cpu"] = _f(
        "auto", "auto = the GPUs when torch sees them, the CPU only on a machine without GPUs; cuda/cpu never fall back")
    deterministic: bool = _f(False, "bitwise-reproducible kernels (slower on GPU): torch's deterministic algorithms, "
                                    "fixed cuBLAS workspace, NCCL ring, TE and megatron deterministic modes "
                                    "(megatron_ext.determinism); GPU resumes are bitwise only with it")
    load: Optional[str] = _f(None, "checkpoint folder to start from; null = resume from output_dir if it holds one")
    tensorboard: bool = _f(True, "write TensorBoard events under output_dir/tensorboard")

    def __post_init__(self) -> None:
        _require(bool(self.stage), "training.stage", "must be non-empty")
        for name in ("seq_length", "micro_batch_size", "global_batch_size", "log_every", "eval_batches",
                     "eval_batches_per_stream"):
            _require(getattr(self, name) > 0, f"training.{name}", "must be > 0")
        _require((self.train_tokens is None) != (not self.train_passes), "training.train_tokens",
                 "give the budget once: train_tokens, or train_passes {STREAM: N}"
                 + (f" (both are set: {self.train_passes})" if self.train_passes else " (neither is set)"))
        _require(self.train_tokens is None or self.train_tokens > 0, "training.train_tokens", "must be > 0")
        if self.train_passes:
            _require(len(self.train_passes) == 1, "training.train_passes",
                     f"one stream, got {sorted(self.train_passes)}")
            ((stream, passes),) = self.train_passes.items()
            _require(isinstance(passes, (int, float)) and not isinstance(passes, bool) and passes > 0,
                     f"training.train_passes.{stream}", f"must be a number > 0, got {passes!r}")
        for name in ("eval_every", "save_every", "max_skipped_steps", "keep_last", "keep_every"):
            _require(getattr(self, name) >= 0, f"training.{name}", "must be >= 0")
        _require(
            self.global_batch_size % self.micro_batch_size == 0,
            "training.global_batch_size",
            f"{self.global_batch_size} is not a multiple of training.micro_batch_size={self.micro_batch_size}",
        )


@dataclass(kw_only=True, slots=True)
class HookSpec:
    """A data hook (see cpt.train.hooks): a plugin called during training that may change the mixture."""

    use: str = _f(doc="'package.module:Class', or the name of a 'cpt.data_hooks' entry point")
    options: dict[str, Any] = _f({}, "keyword arguments for the hook's constructor")
    name: Optional[str] = _f(None, "name in logs and checkpoints; null = derived from `use`")


@dataclass(kw_only=True, slots=True)
class Recipe:
    """A whole run."""

    model: ModelConfig = _f(doc="the network")
    parallel: ParallelConfig = field(default_factory=ParallelConfig, metadata={"doc": "model/data parallel layout"})
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig, metadata={"doc": "AdamW settings"})
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig, metadata={"doc": "WSD learning rate in tokens"})
    data: DataConfig = field(default_factory=DataConfig, metadata={"doc": "training and validation shards"})
    training: TrainingConfig = _f(doc="batch, budget, precision, cadence")
    hooks: list[HookSpec] = _f([], "data hooks, called in this order (e.g. the topic-PPL mixture controller)")

    def __post_init__(self) -> None:
        names = [h.name or h.use for h in self.hooks]
        _require(len(set(names)) == len(names), "hooks", f"hook names must be unique (set hooks[i].name), got {names}")
        _require(
            not self.hooks or bool(self.data.streams),
            "hooks",
            "data hooks change stream weights: they need data.streams",
        )
        _require(
            self.training.seq_length <= self.model.max_position_embeddings,
            "training.seq_length",
            f"{self.training.seq_length} exceeds model.max_position_embeddings={self.model.max_position_embeddings}",
        )
        if self.training.train_passes:
            (stream,) = self.training.train_passes
            weights = {s.name: s.weight for s in self.data.streams}
            _require(weights.get(stream, 0) > 0, f"training.train_passes.{stream}",
                     "names no training stream of data.streams" if stream not in weights else
                     "is a stream of weight 0 (it is never read)")

    def check_world_size(self, world_size: int) -> int:
        """Validate the parallel layout for `world_size` processes; return the data-parallel size."""
        p, m, t = self.parallel, self.model, self.training
        tp, pp = p.tensor_model_parallel_size, p.pipeline_model_parallel_size
        _require(
            world_size % (tp * pp) == 0,
            "parallel.tensor_model_parallel_size",
            f"TP={tp} x parallel.pipeline_model_parallel_size={pp} does not divide the world size {world_size}",
        )
        for key, value in (("num_attention_heads", m.num_attention_heads), ("num_query_groups", m.query_groups),
                           ("ffn_hidden_size", m.ffn_hidden_size)):
            _require(
                value % tp == 0,
                "parallel.tensor_model_parallel_size",
                f"TP={tp} does not divide model.{key}={value}",
            )
        _require(
            m.num_layers % pp == 0,
            "parallel.pipeline_model_parallel_size",
            f"PP={pp} does not divide model.num_layers={m.num_layers}",
        )
        dp = world_size // (tp * pp)
        _require(
            t.global_batch_size % (t.micro_batch_size * dp) == 0,
            "training.global_batch_size",
            f"{t.global_batch_size} is not a multiple of training.micro_batch_size={t.micro_batch_size} "
            f"x data-parallel size {dp}",
        )
        return dp


# ------------------------------------------------------------------ loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check/convert one YAML value against a field type; errors name the key."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key)
    if origin is Literal:
        _require(value in args, key, f"expected one of {list(args)}, got {value!r}")
        return value
    if origin is dict or tp is dict:
        _require(isinstance(value, dict), key, f"expected a mapping, got {value!r}")
        return dict(value)
    if origin is list:
        _require(isinstance(value, list), key, f"expected a list, got {value!r}")
        return [_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)] if args else value
    if dataclasses.is_dataclass(tp):
        _require(isinstance(value, dict), key, f"expected a mapping, got {value!r}")
        return _build(tp, value, key)
    if tp is Any:
        return value
    if tp is bool:
        _require(isinstance(value, bool), key, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        _require(isinstance(value, int) and not isinstance(value, bool), key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads '1e-5' as a string
            try:
                value = float(value)
            except ValueError:
                pass
        _require(
            isinstance(value, (int, float)) and not isinstance(value, bool), key, f"expected a number, got {value!r}"
        )
        return float(value)
    if tp is str:
        _require(isinstance(value, str), key, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"{key}: unsupported schema type {_type_name(tp)}")


def _build(cls: type, data: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise RecipeError(f"{prefix + '.' if prefix else ''}{key}: unknown key{hint}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        full = f"{prefix}.{f.name}" if prefix else f.name
        if f.name in data:
            kwargs[f.name] = _convert(data[f.name], hints[f.name], full)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(f"{full}: required key is missing")
    try:
        return cls(**kwargs)
    except RecipeError:
        raise
    except TypeError as exc:  # pragma: no cover - schema bug, not user input
        raise RecipeError(f"{prefix}: {exc}") from exc


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Apply `a.b.c=value` overrides (value parsed as YAML) to a nested dict, in order."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"{item}: overrides look like key.path=value")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise RecipeError(f"{key}: '{part}' is not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(raw) if raw != "" else None
    return data


def recipe_from_dict(data: dict) -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"recipe: expected a mapping at the top level, got {type(data).__name__}")
    return _build(Recipe, data, "")


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read a YAML recipe, apply overrides, validate."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe file not found") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return recipe_from_dict(apply_overrides(data, overrides))


def recipe_to_dict(recipe: Any) -> Any:
    """Plain nested dict of a recipe (for saving beside checkpoints)."""
    return dataclasses.asdict(recipe)


def schema_keys(cls: type = Recipe, prefix: str = "") -> list[str]:
    """Every dotted key of the schema (frozen by a test: changing the public surface is deliberate)."""
    keys: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        full = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)] or ([tp] if dataclasses.is_dataclass(tp) else [])
        keys.extend(schema_keys(inner[0], full) if inner else [full])
    return keys


def describe(cls: type = Recipe, prefix: str = "") -> list[str]:
    """One line per key: name, default and doc."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        full = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)] or ([tp] if dataclasses.is_dataclass(tp) else [])
        if inner:
            lines.extend(describe(inner[0], full))
            continue
        default = "required" if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING else (
            f.default if f.default is not dataclasses.MISSING else f.default_factory()
        )
        lines.append(f"{full} = {default!r}  # {f.metadata.get('doc', '')}")
    return lines
