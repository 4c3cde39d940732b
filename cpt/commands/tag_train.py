"""`cpt tag-train`: fine-tune a topic classifier on labelled (or bootstrapped) jsonl; report held-out scores."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", required=True, help="jsonl with text and topic (topic optional with --bootstrap)")
    parser.add_argument("--eval", default=None, help="labelled jsonl for the report (default: hold out --eval-fraction)")
    parser.add_argument("--eval-fraction", type=float, default=0.2, help="held-out share of --train without --eval")
    parser.add_argument("--text-key", default="text", help="jsonl field holding the text")
    parser.add_argument("--label-key", default="topic", help="jsonl field holding the topic id")
    parser.add_argument("--taxonomy", default=None, help="taxonomy file (default: the built-in MMLU/CMMLU one)")
    parser.add_argument("--encoder", default=None,
                        help="minilm | use-m3 | a local HF encoder folder (default: minilm when every "
                             "document's lang is en, else the multilingual use-m3)")
    parser.add_argument("--out", required=True, help="folder for the trained classifier")
    parser.add_argument("--bootstrap", choices=("none", "embedding", "llm"), default="none",
                        help="label --train by embedding similarity to the topic descriptions, or by an LLM")
    parser.add_argument("--min-conf", type=float, default=0.0, help="embedding bootstrap: keep labels this confident")
    parser.add_argument("--generator-model", default=None, help="llm bootstrap: local HF chat model folder")
    parser.add_argument("--epochs", type=float, default=3.0, help="passes when fine-tuning an HF encoder")
    parser.add_argument("--head-epochs", type=float, default=10.0,
                        help="passes when the encoder is frozen (use-m3: only the head trains)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--head-lr", type=float, default=None,
                        help="head learning rate (default: --lr when fine-tuning, 1e-2 for a frozen encoder)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--train-layers", type=int, default=None, help="fine-tune only the top N encoder layers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from cpt.annotate import taxonomy as taxonomy_mod
    from cpt.annotate.classifier import TrainConfig, check_labels
    from cpt.annotate.docs import read_labeled
    from cpt.annotate.fit import FitConfig, fit, split

    tax = taxonomy_mod.load(args.taxonomy)
    config = FitConfig(eval_fraction=args.eval_fraction, bootstrap=args.bootstrap, min_conf=args.min_conf,
                       seed=args.seed)
    train_config = TrainConfig(epochs=args.epochs, lr=args.lr, head_lr=args.head_lr, head_epochs=args.head_epochs,
                               batch_size=args.batch_size,
                               max_length=args.max_length, seed=args.seed, train_layers=args.train_layers)
    examples = read_labeled(args.train, args.text_key, args.label_key, require_labels=args.bootstrap == "none")
    if args.eval:
        train_set, eval_set = examples, read_labeled(args.eval, args.text_key, args.label_key)
    else:
        train_set, eval_set = split(examples, args.eval_fraction, args.seed)
    check_labels([e.label for e in examples if e.label is not None], tax, args.train)  # before loading a model
    if args.eval:
        check_labels([e.label for e in eval_set if e.label is not None], tax, args.eval)
    encoder, why = _choose_encoder(args.encoder, [e.lang for e in examples])
    print(f"cpt tag-train: encoder {encoder} ({why})", file=sys.stderr)
    report = fit(encoder, tax, train_set, eval_set, config, train_config, args.out,
                 _labeller_factory(args, tax, encoder), args.device)
    report.pop("model")
    print(json.dumps({k: report[k] for k in ("n_train", "eval", "labeller_eval") if k in report}))
    return 0


def _choose_encoder(given: str | None, langs: list[str]) -> tuple[str, str]:
    """(encoder, why): the given one, else the default for these documents' languages."""
    from cpt.annotate.encoder import ENCODERS, default_encoder

    if given:
        return given, "--encoder"
    name = default_encoder(langs)
    why = "every document is English" if name == "minilm" else f"documents in {sorted(set(langs))}"
    return name, f"{ENCODERS[name]}; default: {why}"


def _labeller_factory(args: argparse.Namespace, tax, encoder: str):
    if args.bootstrap == "embedding":
        def embedding():
            from cpt.annotate.bootstrap import EmbeddingLabeler
            from cpt.annotate.encoder import load_encoder

            return EmbeddingLabeler(load_encoder(encoder, args.device, args.max_length), tax)
        return embedding
    if args.bootstrap == "llm":
        if not args.generator_model:
            raise SystemExit("--bootstrap llm needs --generator-model (a local HF chat model folder)")

        def llm():
            from cpt.annotate.bootstrap import LLMLabeler
            from cpt.annotate.modelfiles import check_model_dir
            from cpt.synth.generators.transformers_backend import TransformersGenerator

            check_model_dir(args.generator_model, "generator")
            return LLMLabeler(TransformersGenerator(args.generator_model, device=args.device), tax)
        return llm
    return None
