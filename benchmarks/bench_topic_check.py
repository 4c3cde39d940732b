"""Topic classifier accuracy on the labelled check sets, per encoder: zero-shot and after training.

Check sets (cpt/annotate/labels/README.md): 252 People's Daily passages labelled by reading
them (every third of each topic held out: 83), and the held-out English Wikipedia passages of the
classifier tests (66, from articles never trained on). "Trained" = one classifier per encoder
trained on both languages' training sides (169 Chinese + 129 English passages), evaluated on each
held-out side: MiniLM fine-tuned (top 2 layers, 3 epochs, 128 tokens), USE frozen with its head
trained (10 passes). Zero-shot = the untrained classifier, whose head is the topic descriptions'
embeddings. Accuracy and macro-F1 are over the topics present in each set.

    PYTHONPATH=$PWD python benchmarks/bench_topic_check.py [--encoders minilm,use-m3]

Prints a markdown table, then one JSON object as the last line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(encoder: str) -> dict:
    from cpt.annotate.checksets import en_check_set, wiki_split, zh_check_split
    from cpt.annotate import taxonomy
    from cpt.annotate.classifier import TopicClassifier, TrainConfig, train

    tax = taxonomy.load()
    zh_train, zh_held = zh_check_split()
    en_train, en_held = wiki_split()[0], en_check_set()
    held = {"zh": zh_held, "en": en_held}
    start = time.perf_counter()
    out: dict = {}
    zero_shot = TopicClassifier.from_encoder(encoder, tax, "cpu", 128)
    config = TrainConfig(epochs=3, lr=1e-4, batch_size=16, max_length=128, train_layers=2)
    trained = train(encoder, tax, [e.text for e in zh_train + en_train], [e.label for e in zh_train + en_train],
                    config, "cpu", log=lambda line: None)
    for stage, model in (("zero_shot", zero_shot), ("trained", trained)):
        for lang, examples in held.items():
            r = model.evaluate([e.text for e in examples], [e.label for e in examples], [e.lang for e in examples])
            out[f"{lang}_{stage}"] = {"accuracy": round(r.accuracy, 3), "macro_f1": round(r.macro_f1, 3), "n": r.n}
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoders", default="minilm,use-m3")
    args = p.parse_args()
    results = {name: measure(name) for name in args.encoders.split(",")}
    print("| encoder | zh zero-shot acc / F1 | zh trained acc / F1 | en zero-shot acc / F1 | en trained acc / F1 |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        cells = [f"{r[k]['accuracy']:.3f} / {r[k]['macro_f1']:.3f}"
                 for k in ("zh_zero_shot", "zh_trained", "en_zero_shot", "en_trained")]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(json.dumps({"bench": "topic_check", "results": results,
                      "load_average": [round(x, 2) for x in os.getloadavg()]}))


if __name__ == "__main__":
    main()
