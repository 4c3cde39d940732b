"""Recipe edits on the real trainer: one stage ("s1") trained in three launches, the recipe edited
before the second (a stream added, a filter changed, other weights) and before the third (the shard
re-tagged: documents move between two topic streams), then a launch with a changed held-out split,
which must be refused. Then a second run with the topic-PPL controller on validated streams,
edited after 2 steps (a stream dropped, one added). Writes `<out>/result.json`: the ids each launch
fetched (RecordingSamples), the runs' metrics records and the refusal message.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train_fixtures import RecordingSamples, stream_recipe  # noqa: E402

from cpt.config import recipe_from_dict  # noqa: E402
from cpt.train.loop import Trainer  # noqa: E402

GBS = 8


def recipe(prefix: str, run_dir: Path, steps: int, version: int) -> dict:
    rd = stream_recipe(prefix, run_dir, training={"stage": "s1", "train_tokens": 64 * GBS * steps, "save_every": 2,
                                                  "eval_every": 0})
    zh = 'lang == "zh" and topic == "{}"'
    streams = [{"name": "en", "prefixes": [prefix], "filter": 'lang == "en" and line <= 40', "weight": 0.4, "seed": 1},
               {"name": "zh_a", "prefixes": [prefix], "filter": zh.format("a"), "weight": 0.3, "seed": 2},
               {"name": "zh_b", "prefixes": [prefix], "filter": zh.format("b"), "weight": 0.3, "seed": 3}]
    if version >= 2:  # filter changed, stream added, weights changed
        streams[0]["filter"] = 'lang == "en" and line <= 20'
        streams.append({"name": "en_late", "prefixes": [prefix], "filter": 'lang == "en" and line > 40',
                        "weight": 0.2, "seed": 4})
        streams[1]["weight"] = 0.1
    rd["data"]["streams"] = streams
    if version == 4:  # a held-out split where there was none: refused
        rd["data"]["valid_holdout"] = 0.2
    return rd


def controlled(prefix: str, run_dir: Path, steps: int, version: int) -> dict:
    """The topic-PPL controller over validated streams; version 2 drops zh_b and adds en_late."""
    rd = stream_recipe(prefix, run_dir, training={"stage": "s1", "train_tokens": 64 * GBS * steps, "save_every": 2,
                                                  "eval_every": 1, "eval_batches_per_stream": 1})
    zh = 'lang == "zh" and topic == "{}"'
    streams = [{"name": "en", "prefixes": [prefix], "filter": 'lang == "en" and line <= 40', "weight": 0.4, "seed": 1},
               {"name": "zh_a", "prefixes": [prefix], "filter": zh.format("a"), "weight": 0.3, "seed": 2},
               {"name": "zh_b", "prefixes": [prefix], "filter": zh.format("b"), "weight": 0.3, "seed": 3}]
    if version == 2:
        streams = [*streams[:2], {"name": "en_late", "prefixes": [prefix], "filter": 'lang == "en" and line > 40',
                                  "weight": 0.3, "seed": 4}]
    rd["data"].update(streams=streams, valid_holdout=0.25, valid_holdout_seed=7)
    rd["hooks"] = [{"use": "topic_ppl", "name": "topic_ppl", "options": {"alpha": 2.0}}]
    return rd


def launch(rd: dict) -> tuple[list, str | None]:
    from cpt.train.run import build_training_data
    from megatron_ext.engine import MegatronEngine

    rec = recipe_from_dict(rd)
    engine = MegatronEngine(rec)
    data = build_training_data(rec)
    samples = RecordingSamples(data.train)
    trainer = Trainer(rec, engine, samples, data.valid, valid_streams=data.valid_streams)
    try:
        trainer.resume()
    except ValueError as exc:
        data.close()
        return [], str(exc)
    trainer.train()
    engine.finish_saves(blocking=True)
    trainer.logger.close()
    data.close()
    return samples.seen, None


def main() -> None:
    from cpt.shards.metadata import read_metadata, update_metadata

    p = argparse.ArgumentParser()
    p.add_argument("--prefix", required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    run_dir = args.out / "run"
    lines = read_metadata(args.prefix, ["line"]).column("line").to_pylist()
    update_metadata(args.prefix, {"topic": ["a" if i % 2 else "b" for i in range(len(lines))]})
    seen = {}
    seen["v1"], _ = launch(recipe(args.prefix, run_dir, 2, 1))
    seen["v2"], _ = launch(recipe(args.prefix, run_dir, 4, 2))
    update_metadata(args.prefix, {"topic": ["a" if i % 3 else "b" for i in range(len(lines))]})  # re-tag
    seen["v3"], _ = launch(recipe(args.prefix, run_dir, 6, 3))
    _, refused = launch(recipe(args.prefix, run_dir, 8, 4))
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    mixture_dir = args.out / "mixture_run"
    launch(controlled(args.prefix, mixture_dir, 2, 1))
    launch(controlled(args.prefix, mixture_dir, 4, 2))
    mixture = [json.loads(line) for line in (mixture_dir / "metrics.jsonl").read_text().splitlines()]
    (args.out / "result.json").write_text(json.dumps({"seen": seen, "records": records, "refused": refused,
                                                      "mixture_records": mixture}))


if __name__ == "__main__":
    main()
