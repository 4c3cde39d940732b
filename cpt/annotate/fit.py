"""`cpt tag-train` as a function: labels (given or bootstrapped) -> classifier -> held-out report.

The held-out split is taken before anything else and is only ever scored against its given labels,
so the reported accuracy of a bootstrapped classifier is honest: it measures agreement with real
labels, never with the bootstrapped ones. When bootstrapping, the labeller's own accuracy on the
held-out split is reported beside the classifier's, so each path's accuracy is on record.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from cpt.annotate import classifier as clf_mod
from cpt.annotate.docs import Labeled
from cpt.annotate.metrics import evaluate
from cpt.annotate.taxonomy import Taxonomy


@dataclass(frozen=True, slots=True, kw_only=True)
class FitConfig:
    eval_fraction: float = 0.2
    """Share of the labelled examples held out for the report when no eval set is given."""
    bootstrap: str = "none"
    """none | embedding | llm: where the training labels come from."""
    min_conf: float = 0.0
    """Embedding bootstrap: train only on examples whose zero-shot confidence is at least this."""
    seed: int = 0
    """Seeds the held-out split (and, through TrainConfig, training)."""

    def __post_init__(self) -> None:
        if self.bootstrap not in ("none", "embedding", "llm"):
            raise ValueError(f"bootstrap must be none, embedding or llm, got {self.bootstrap!r}")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")


def split(examples: Sequence[Labeled], fraction: float, seed: int) -> tuple[list[Labeled], list[Labeled]]:
    """Deterministic (train, held-out) split."""
    order = np.random.default_rng(seed).permutation(len(examples))
    n_eval = int(round(fraction * len(examples)))
    held = set(order[:n_eval].tolist())
    return ([e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held])


def bootstrap_labels(examples: Sequence[Labeled], labeller, min_conf: float = 0.0) -> tuple[list[Labeled], dict[str, int]]:
    """Replace the labels of `examples` with the labeller's; drop unparsed or low-confidence ones (counted)."""
    texts = [e.text for e in examples]
    langs = [e.lang for e in examples]
    result = labeller.label(texts, langs)
    labels, conf = result if isinstance(result, tuple) else (result, np.ones(len(texts)))
    kept, dropped = [], {"unparsed": 0, "low_confidence": 0}
    for e, label, c in zip(examples, labels, conf):
        if label is None:
            dropped["unparsed"] += 1
        elif c < min_conf:
            dropped["low_confidence"] += 1
        else:
            kept.append(Labeled(e.text, label, e.lang))
    return kept, dropped


def fit(encoder, taxonomy: Taxonomy, train_set: Sequence[Labeled], eval_set: Sequence[Labeled],
        config: FitConfig, train_config: clf_mod.TrainConfig, out: str | Path | None = None,
        labeller_factory: Callable[[], Any] | None = None, device: str | None = None,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (on given or bootstrapped labels), report on `eval_set`, save to `out`; returns the report.

    `encoder`: a registered encoder name or an HF folder (`cpt.annotate.encoder.load_encoder`), or a
    loaded `TextEncoder`."""
    report: dict[str, Any] = {"taxonomy": taxonomy.name, "bootstrap": config.bootstrap,
                              "train_config": clf_mod.config_dict(train_config)}
    gold_eval = [e for e in eval_set if e.label is not None]
    if config.bootstrap != "none":
        if labeller_factory is None:
            raise ValueError(f"bootstrap={config.bootstrap} needs a labeller")
        labeller = labeller_factory()
        if gold_eval:
            got = labeller.label([e.text for e in gold_eval], [e.lang for e in gold_eval])
            predicted = got[0] if isinstance(got, tuple) else got
            predicted = [p if p is not None else "<unparsed>" for p in predicted]
            labels = list(taxonomy.labels) + (["<unparsed>"] if "<unparsed>" in predicted else [])
            labeller_report = evaluate([e.label for e in gold_eval], predicted, labels)
            report["labeller_eval"] = labeller_report.to_dict()
            log(f"{config.bootstrap} labeller on held-out data:\n{labeller_report.format()}")
        train_set, dropped = bootstrap_labels(train_set, labeller, config.min_conf)
        if getattr(getattr(labeller, "encoder", None), "name", None) == str(encoder):
            encoder = labeller.encoder  # the embedding labeller's encoder, already loaded: train on it
        report["bootstrap_dropped"] = dropped
        log(f"bootstrapped {len(train_set)} training labels (dropped {dropped})")
    if not train_set:
        raise ValueError("no training examples left (all dropped by bootstrapping?)")
    clf_mod.check_labels([e.label for e in train_set], taxonomy)
    model = clf_mod.train(encoder, taxonomy, [e.text for e in train_set], [e.label for e in train_set],
                          train_config, device, log)
    report["n_train"] = len(train_set)
    report["encoder"] = model.encoder.identity()
    if gold_eval:
        clf_mod.check_labels([e.label for e in gold_eval], taxonomy, "evaluation data")
        held = model.evaluate([e.text for e in gold_eval], [e.label for e in gold_eval], [e.lang for e in gold_eval])
        report["eval"] = held.to_dict()
        log(f"classifier on held-out data:\n{held.format()}")
    if out is not None:
        model.save(out, report)
    report["model"] = model
    return report
