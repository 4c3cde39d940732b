"""The topic classifier: fine-tune a small HF encoder on (text, topic) pairs, save, load, predict.

The saved folder is a plain transformers sequence-classification folder (loadable without cpt)
plus the taxonomy it was trained on (`cpt_taxonomy.yaml`) and the held-out report. Loading checks
that the model's labels are exactly the taxonomy's, in order, so a classifier can never write
topic ids the rest of the pipeline does not know.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from cpt.annotate import taxonomy as taxonomy_mod
from cpt.annotate.metrics import Report, evaluate
from cpt.annotate.modelfiles import check_model_dir, pick_device
from cpt.annotate.taxonomy import Taxonomy, TaxonomyError

REPORT_FILE = "cpt_train_report.json"


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainConfig:
    epochs: float = 3.0
    """Passes over the training set (fractions allowed: 0.5 = half the steps of one pass)."""
    lr: float = 1e-4
    """Peak AdamW learning rate (linear warmup over the first 10% of steps, then linear decay)."""
    batch_size: int = 16
    """Examples per optimizer step."""
    max_length: int = 128
    """Tokens per example; longer texts are truncated."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    seed: int = 0
    """Seeds the head's initialisation, dropout and the example order."""
    train_layers: int | None = None
    """Fine-tune only the top N encoder layers (+ pooler and head); None fine-tunes all. Frozen
    lower layers need no backward pass, which roughly halves a CPU step for N = 2 of 6."""

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.lr <= 0 or self.batch_size < 1 or self.max_length < 2:
            raise ValueError(f"TrainConfig needs epochs > 0, lr > 0, batch_size >= 1, max_length >= 2: {self}")


def check_labels(labels: Sequence[str], taxonomy: Taxonomy, where: str = "training data") -> None:
    unknown = sorted(set(labels) - set(taxonomy.labels))
    if unknown:
        raise TaxonomyError(f"{where} has labels {unknown} that taxonomy {taxonomy.name!r} does not define "
                            f"(its topics: {list(taxonomy.labels)})")


class TopicClassifier:
    """A sequence-classification model whose labels are a taxonomy's topic ids."""

    def __init__(self, model, tokenizer, taxonomy: Taxonomy, device: str, max_length: int = 128):
        self.model, self.tokenizer, self.taxonomy = model, tokenizer, taxonomy
        self.device, self.max_length = device, max_length
        id2label = [model.config.id2label[i] for i in range(model.config.num_labels)]
        if tuple(id2label) != taxonomy.labels:
            raise TaxonomyError(f"classifier labels {id2label} do not match taxonomy {taxonomy.name!r} "
                                f"labels {list(taxonomy.labels)}")

    @classmethod
    def load(cls, model_dir: str | Path, taxonomy: Taxonomy | None = None, device: str | None = None,
             max_length: int = 128) -> "TopicClassifier":
        """Load a trained folder; `taxonomy`, when given, must be the one the folder was trained on."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model_dir = check_model_dir(model_dir, "topic classifier")
        if not (model_dir / taxonomy_mod.FILE_NAME).is_file():
            raise TaxonomyError(f"{model_dir} has no {taxonomy_mod.FILE_NAME}: not a folder written by `cpt tag-train`")
        stored = taxonomy_mod.load(model_dir / taxonomy_mod.FILE_NAME)
        if taxonomy is not None and taxonomy.labels != stored.labels:
            raise TaxonomyError(f"taxonomy {taxonomy.name!r} labels {list(taxonomy.labels)} differ from those "
                                f"{model_dir} was trained on {list(stored.labels)}")
        device = pick_device(device)
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, local_files_only=True)
        return cls(model.to(device).eval(), tokenizer, taxonomy or stored, device, max_length)

    def predict_proba(self, texts: Sequence[str], langs: Sequence[str] | None = None,
                      batch_size: int = 64) -> np.ndarray:
        """[len(texts), n_labels] probabilities; topics not defined for a text's lang get 0."""
        import torch

        self.model.eval()
        out = []
        # cut very long texts before tokenizing: no token is longer than 16 characters in practice
        texts = [t[:self.max_length * 16] for t in texts]
        for k in range(0, len(texts), batch_size):
            enc = self.tokenizer(list(texts[k:k + batch_size]), padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                logits = self.model(**enc).logits.float()
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

    def save(self, out: str | Path, report: dict | None = None) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out, safe_serialization=True)
        self.tokenizer.save_pretrained(out)
        self.taxonomy.save(out / taxonomy_mod.FILE_NAME)
        if report is not None:
            (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
        return out


def train(encoder_dir: str | Path, taxonomy: Taxonomy, texts: Sequence[str], labels: Sequence[str],
          config: TrainConfig = TrainConfig(), device: str | None = None,
          log: Callable[[str], None] = print) -> TopicClassifier:
    """Fine-tune the encoder (all weights, plus a new classification head) on the examples."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    check_model_dir(encoder_dir, "encoder")
    check_labels(labels, taxonomy)
    if config.train_layers is not None and config.train_layers < 0:
        raise ValueError(f"train_layers must be >= 0 or None, got {config.train_layers}")
    if len(texts) != len(labels) or not texts:
        raise ValueError(f"need as many labels as texts and at least one example ({len(texts)} texts, {len(labels)} labels)")
    device = pick_device(device)
    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        encoder_dir, local_files_only=True, num_labels=len(taxonomy.labels),
        id2label=dict(enumerate(taxonomy.labels)), label2id={label: i for i, label in enumerate(taxonomy.labels)},
    ).to(device)
    if config.train_layers is not None:
        freeze_lower_layers(model, config.train_layers)
    index = {label: i for i, label in enumerate(taxonomy.labels)}
    y = np.array([index[label] for label in labels])
    rng = np.random.default_rng(config.seed)
    steps_per_epoch = -(-len(texts) // config.batch_size)
    total = max(1, round(config.epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(1, total // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup))))
    model.train()
    order: list[int] = []
    for step in range(total):
        if len(order) < config.batch_size:
            order += rng.permutation(len(texts)).tolist()
        batch, order = order[:config.batch_size], order[config.batch_size:]
        enc = tokenizer([texts[i] for i in batch], padding=True, truncation=True,
                        max_length=config.max_length, return_tensors="pt").to(device)
        loss = model(**enc, labels=torch.from_numpy(y[batch]).to(device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % max(1, total // 10) == 0 or step == total - 1:
            log(f"step {step + 1}/{total} loss {loss.item():.4f}")
    model.eval()
    return TopicClassifier(model, tokenizer, taxonomy, device, config.max_length)


def freeze_lower_layers(model, train_layers: int) -> None:
    """Freeze the embeddings and all but the top `train_layers` layers of a BERT-style encoder."""
    encoder = getattr(model.base_model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if layers is None:
        raise ValueError(f"train_layers needs a BERT-style encoder (base_model.encoder.layer); "
                         f"{type(model).__name__} has none: leave train_layers unset")
    frozen = [model.base_model.embeddings, *layers[:max(0, len(layers) - train_layers)]]
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)


def config_dict(config: TrainConfig) -> dict:
    return asdict(config)
