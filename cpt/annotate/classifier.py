"""The topic classifier: a sentence encoder plus a linear head over its normalised sentence
embedding; trained on (text, topic) pairs, saved, loaded, used for prediction.

Why this shape rather than `AutoModelForSequenceClassification`: sentence encoders such as
all-MiniLM-L6-v2 are trained for mean pooling, and their [CLS] vector (what the stock head reads)
is untrained for this. With sentence vectors, the head can start from the embeddings of the topic
descriptions (scaled like a softmax at temperature 0.05), so the untrained classifier already *is*
the zero-shot labeller and a few training steps only improve on it - which matters on CPUs.

The encoder is any `cpt.annotate.encoder.TextEncoder`. A trainable one (an HF folder) is
fine-tuned with the head; a frozen one (the multilingual USE) has its vectors computed once and
only the head is trained on them, at `TrainConfig.head_lr`.

A saved folder holds the head (`cpt_head.safetensors`), its label list and the identity of its
encoder (`cpt_classifier.json`), the taxonomy it was trained on (`cpt_taxonomy.yaml`), the held-out
report, and - for an HF encoder - the encoder itself as a plain transformers folder. Loading checks
that the labels are exactly the taxonomy's, in order, so a classifier can never write topic ids the
pipeline does not know, and that the encoder is the recorded one (a USE classifier refuses another
package version or other weights).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from cpt.annotate import encoder as encoder_mod
from cpt.annotate import taxonomy as taxonomy_mod
from cpt.annotate.metrics import Report, evaluate
from cpt.annotate.modelfiles import ModelFolderError, check_model_dir, pick_device
from cpt.annotate.taxonomy import Taxonomy, TaxonomyError

REPORT_FILE = "cpt_train_report.json"
HEAD_FILE = "cpt_head.safetensors"
META_FILE = "cpt_classifier.json"
INIT_TEMPERATURE = 0.05


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainConfig:
    epochs: float = 3.0
    """Passes over the training set (fractions allowed: 0.5 = half the steps of one pass)."""
    lr: float = 1e-4
    """Peak AdamW learning rate (linear warmup over the first 10% of steps, then linear decay)."""
    head_lr: float | None = None
    """Peak learning rate of the head; None: `lr` for a fine-tuned encoder, 1e-2 for a frozen one
    (a head alone, on fixed vectors, needs larger steps to move from its zero-shot start)."""
    head_epochs: float = 10.0
    """Passes over the training set when the encoder is frozen (only the head trains, on vectors
    computed once, so a pass costs next to nothing); `epochs` is for fine-tuning."""
    batch_size: int = 16
    """Examples per optimizer step."""
    max_length: int = 128
    """Tokens per example for an HF encoder (longer texts are truncated); the USE encoder reads
    4 characters per token of it."""
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to the head)."""
    seed: int = 0
    """Seeds dropout and the example order."""
    train_layers: int | None = None
    """Fine-tune only the top N encoder layers (+ head); None fine-tunes all. Frozen lower layers
    need no backward pass, which roughly halves a CPU step for N = 2 of 6. Frozen encoders ignore it."""

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.head_epochs <= 0 or self.lr <= 0 or self.batch_size < 1 or self.max_length < 2:
            raise ValueError(f"TrainConfig needs epochs > 0, head_epochs > 0, lr > 0, batch_size >= 1, max_length >= 2: {self}")
        if self.head_lr is not None and self.head_lr <= 0:
            raise ValueError(f"head_lr must be > 0 or None, got {self.head_lr}")
        if self.train_layers is not None and self.train_layers < 0:
            raise ValueError(f"train_layers must be >= 0 or None, got {self.train_layers}")


def check_labels(labels: Sequence[str], taxonomy: Taxonomy, where: str = "training data") -> None:
    unknown = sorted(set(labels) - set(taxonomy.labels))
    if unknown:
        raise TaxonomyError(f"{where} has labels {unknown} that taxonomy {taxonomy.name!r} does not define "
                            f"(its topics: {list(taxonomy.labels)})")


class TopicClassifier:
    """Encoder + linear head whose outputs are a taxonomy's topic ids."""

    def __init__(self, encoder: encoder_mod.TextEncoder, head, labels: Sequence[str], taxonomy: Taxonomy,
                 device: str, max_length: int = 128):
        if tuple(labels) != taxonomy.labels:
            raise TaxonomyError(f"classifier labels {list(labels)} do not match taxonomy {taxonomy.name!r} "
                                f"labels {list(taxonomy.labels)}")
        if head.out_features != len(labels):
            raise ModelFolderError(f"classifier head has {head.out_features} outputs for {len(labels)} labels")
        if head.in_features != encoder.dim:
            raise ModelFolderError(f"classifier head reads {head.in_features}-d vectors; encoder "
                                   f"{encoder.name!r} gives {encoder.dim}-d")
        self.encoder, self.head = encoder, head
        self.taxonomy, self.device, self.max_length = taxonomy, device, max_length

    # ------------------------------------------------------------------ building

    @classmethod
    def from_encoder(cls, encoder: str | Path | encoder_mod.TextEncoder, taxonomy: Taxonomy,
                     device: str | None = None, max_length: int = 128) -> "TopicClassifier":
        """An untrained classifier whose head is the zero-shot one (topic-description embeddings).

        `encoder`: a TextEncoder, or a name / folder for `cpt.annotate.encoder.load_encoder`."""
        import torch

        device = pick_device(device)
        if isinstance(encoder, (str, Path)):
            encoder = encoder_mod.load_encoder(str(encoder), device, max_length)
        head = torch.nn.Linear(encoder.dim, len(taxonomy.labels)).to(device)
        self = cls(encoder, head, taxonomy.labels, taxonomy, device, max_length)
        with torch.no_grad():
            head.weight.copy_(torch.from_numpy(self._description_vectors()) / INIT_TEMPERATURE)
            head.bias.zero_()
        return self

    def _description_vectors(self) -> np.ndarray:
        """Per label: the normalised mean of its topics' "name: description" embeddings (all languages)."""
        vectors = self.embed([f"{t.name}: {t.description}" for t in self.taxonomy.topics])
        out = np.zeros((len(self.taxonomy.labels), vectors.shape[1]), dtype=np.float32)
        for t, v in zip(self.taxonomy.topics, vectors):
            out[self.taxonomy.labels.index(t.id)] += v
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    @classmethod
    def load(cls, model_dir: str | Path, taxonomy: Taxonomy | None = None, device: str | None = None,
             max_length: int | None = None, encoder: str | None = None) -> "TopicClassifier":
        """Load a trained folder; `taxonomy`, when given, must be the one the folder was trained on,
        and `encoder` (a name, when given) the encoder it was trained with.

        `max_length` defaults to the length the classifier was trained with."""
        import torch
        from safetensors.torch import load_file

        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise ModelFolderError(f"topic classifier folder {model_dir} does not exist")
        for name in (taxonomy_mod.FILE_NAME, HEAD_FILE, META_FILE):
            if not (model_dir / name).is_file():
                raise ModelFolderError(f"{model_dir} has no {name}: not a complete folder written by `cpt tag-train`")
        stored = taxonomy_mod.load(model_dir / taxonomy_mod.FILE_NAME)
        if taxonomy is not None and taxonomy.labels != stored.labels:
            raise TaxonomyError(f"taxonomy {taxonomy.name!r} labels {list(taxonomy.labels)} differ from those "
                                f"{model_dir} was trained on {list(stored.labels)}")
        meta = json.loads((model_dir / META_FILE).read_text())
        max_length = max_length or int(meta["max_length"])
        device = pick_device(device)
        text_encoder = _load_recorded_encoder(model_dir, meta, device, max_length, encoder)
        weights = load_file(str(model_dir / HEAD_FILE))
        head = torch.nn.Linear(weights["weight"].shape[1], weights["weight"].shape[0])
        head.load_state_dict(weights)
        return cls(text_encoder, head.to(device), meta["labels"], taxonomy or stored, device, max_length)

    def save(self, out: str | Path, report: dict | None = None) -> Path:
        from safetensors.torch import save_file

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.encoder.save(out)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}, str(out / HEAD_FILE))
        self.taxonomy.save(out / taxonomy_mod.FILE_NAME)
        meta = {"labels": list(self.taxonomy.labels), "normalize": True, "max_length": self.max_length,
                "encoder": self.encoder.identity()}
        (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if report is not None:
            (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
        return out

    # ------------------------------------------------------------------ inference

    def logits(self, texts: Sequence[str]):
        """Head outputs; with gradients through a trainable encoder in training mode."""
        import torch

        if self.encoder.trainable:
            vectors = self.encoder.forward(texts)
        else:
            vectors = torch.from_numpy(self.encoder.embed(texts)).to(self.device)
        return self.head(vectors)

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return self.encoder.embed(texts, batch_size)

    def predict_proba(self, texts: Sequence[str], langs: Sequence[str] | None = None,
                      batch_size: int = 64) -> np.ndarray:
        """[len(texts), n_labels] probabilities; topics not defined for a text's lang get 0."""
        import torch

        if self.encoder.trainable:
            self.encoder.model.eval()
        out = []
        for k in range(0, len(texts), batch_size):
            with torch.inference_mode():
                logits = self.logits(texts[k:k + batch_size]).float()
            if langs is not None:
                logits = logits + torch.from_numpy(self._lang_mask(langs[k:k + batch_size])).to(logits.device)
            out.append(torch.softmax(logits, dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.taxonomy.labels)), dtype=np.float32)

    def _lang_mask(self, langs: Sequence[str]) -> np.ndarray:
        mask = np.zeros((len(langs), len(self.taxonomy.labels)), dtype=np.float32)
        index = {label: i for i, label in enumerate(self.taxonomy.labels)}
        for row, lang in enumerate(langs):
            allowed = {index[t.id] for t in self.taxonomy.for_lang(lang)}
            mask[row, [i for i in range(len(index)) if i not in allowed]] = -1e9
        return mask

    def predict(self, texts: Sequence[str], langs: Sequence[str] | None = None,
                batch_size: int = 64) -> tuple[list[str], np.ndarray]:
        """Top topic id and its probability for each text."""
        proba = self.predict_proba(texts, langs, batch_size)
        best = proba.argmax(axis=1) if len(proba) else np.zeros(0, dtype=np.int64)
        return [self.taxonomy.labels[i] for i in best], proba[np.arange(len(best)), best]

    def evaluate(self, texts: Sequence[str], labels: Sequence[str], langs: Sequence[str] | None = None) -> Report:
        predicted, _ = self.predict(texts, langs)
        return evaluate(labels, predicted, self.taxonomy.labels)


def _load_recorded_encoder(model_dir: Path, meta: dict, device: str, max_length: int,
                           requested: str | None) -> encoder_mod.TextEncoder:
    """The encoder a folder records (folders written before encoders were recorded hold an HF one)."""
    recorded = meta.get("encoder") or {"kind": "hf", "name": "hf"}
    if requested is not None and requested not in (recorded.get("name"), recorded.get("kind")):
        raise encoder_mod.EncoderMismatchError(
            f"{model_dir} was trained with encoder {recorded.get('name')!r} and refuses {requested!r} "
            f"(a head reads only the vectors of the encoder it was trained on)")
    if recorded.get("kind") == "hf":
        check_model_dir(model_dir, "topic classifier")
        text_encoder = encoder_mod.HFEncoder(model_dir, device, max_length, name=recorded.get("name", "hf"))
    elif recorded.get("kind") in encoder_mod.ENCODERS:
        text_encoder = encoder_mod.load_encoder(recorded["kind"], device, max_length)
    else:
        raise ModelFolderError(f"{model_dir / META_FILE}: unknown encoder kind {recorded.get('kind')!r} "
                               f"(known: hf, {', '.join(encoder_mod.ENCODERS)})")
    encoder_mod.check_identity(recorded, text_encoder, str(model_dir))
    return text_encoder


def train(encoder: str | Path | encoder_mod.TextEncoder, taxonomy: Taxonomy, texts: Sequence[str],
          labels: Sequence[str], config: TrainConfig = TrainConfig(), device: str | None = None,
          log: Callable[[str], None] = print) -> TopicClassifier:
    """Train the head (and a trainable encoder, all or top layers), starting from the zero-shot head."""
    import torch

    check_labels(labels, taxonomy)
    if len(texts) != len(labels) or not texts:
        raise ValueError(f"need as many labels as texts and at least one example ({len(texts)} texts, {len(labels)} labels)")
    torch.manual_seed(config.seed)
    model = TopicClassifier.from_encoder(encoder, taxonomy, device, config.max_length)
    y = torch.from_numpy(np.array([taxonomy.labels.index(label) for label in labels])).to(model.device)
    if model.encoder.trainable:
        if config.train_layers is not None:
            freeze_lower_layers(model.encoder.model, config.train_layers)
        params = [p for p in model.encoder.model.parameters() if p.requires_grad]
        groups = [{"params": params, "weight_decay": config.weight_decay}]
        head_lr = config.head_lr or config.lr
        model.encoder.model.train()
        batch_logits = lambda batch: model.logits([texts[i] for i in batch])  # noqa: E731
    else:
        params, groups = [], []
        head_lr = config.head_lr or 1e-2
        vectors = torch.from_numpy(model.encoder.embed(texts)).to(model.device)  # once: the encoder is frozen
        batch_logits = lambda batch: model.head(vectors[batch])  # noqa: E731
    groups.append({"params": model.head.parameters(), "weight_decay": 0.0, "lr": head_lr})
    optimizer = torch.optim.AdamW(groups, lr=config.lr)
    epochs = config.epochs if model.encoder.trainable else config.head_epochs
    _optimize(optimizer, [*params, *model.head.parameters()], batch_logits, y, len(texts), epochs, config, log)
    if model.encoder.trainable:
        model.encoder.model.eval()
    return model


def _optimize(optimizer, params, batch_logits: Callable, y, n: int, epochs: float, config: TrainConfig,
              log: Callable[[str], None]) -> None:
    """Cross-entropy steps over shuffled batches: linear warmup (10%), then linear decay."""
    import torch

    rng = np.random.default_rng(config.seed)
    total = max(1, round(epochs * -(-n // config.batch_size)))
    warmup = max(1, total // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup))))
    order: list[int] = []
    for step in range(total):
        if len(order) < config.batch_size:
            order += rng.permutation(n).tolist()
        batch, order = order[:config.batch_size], order[config.batch_size:]
        loss = torch.nn.functional.cross_entropy(batch_logits(batch), y[batch])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % max(1, total // 10) == 0 or step == total - 1:
            log(f"step {step + 1}/{total} loss {loss.item():.4f}")


def freeze_lower_layers(encoder, train_layers: int) -> None:
    """Freeze the embeddings and all but the top `train_layers` layers of a BERT-style encoder."""
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if layers is None:
        raise ValueError(f"train_layers needs a BERT-style encoder (.encoder.layer); "
                         f"{type(encoder).__name__} has none: leave train_layers unset")
    for module in [encoder.embeddings, *layers[:max(0, len(layers) - train_layers)]]:
        for p in module.parameters():
            p.requires_grad_(False)


def config_dict(config: TrainConfig) -> dict:
    return asdict(config)
