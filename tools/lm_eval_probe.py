#!/usr/bin/env python
"""Can the built-in lm-eval tasks (cpt_next_sentence_en / _zh) separate sweep arms at the proxy's scale?

A sweep on the proxy of `cpt sweep prepare --size tiny` (the cached 1.8M-parameter Llama, imported),
with the proxy recipe's model, optimizer, schedule and length (recipes/proxy/bilingual.yaml: 96 steps
of 1024 tokens), on the tests' bilingual shard (60 Python help topics, 60 People's Daily articles)
tokenized with the proxy's tokenizer. The arms differ as much as a mixture can: `zh0` trains on
English only, `zh50` on Chinese and English 1:1; 3 seeds. Every run is scored on both tasks (all
items) as the sweep eval `lm`, beside the held-out perplexity of each stream. If a task cannot tell
these two arms apart, it cannot tell the shipped sweeps' much closer arms apart either.

    python tools/lm_eval_probe.py runs/lm_eval_probe      # builds the folder, runs the sweep, prints JSON

Needs no prepared sweep folder: only the cached proxy (built on first use, about 5 minutes).
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
sys.path.insert(0, str(ROOT / "tests"))

METRICS = ["lm/cpt_next_sentence_en/acc", "lm/cpt_next_sentence_en/acc_norm", "lm/cpt_next_sentence_zh/acc",
           "lm/cpt_next_sentence_zh/acc_norm", "ppl/en", "ppl/zh"]


def build(work: Path) -> Path:
    """The workdir (import, shard, base recipe) and its sweep file; returns the sweep file."""
    import yaml
    from transformers import AutoTokenizer

    from cpt.cli import main
    from cpt.sweep.proxy_model import proxy_hf_dir
    from train_fixtures import write_lang_shards

    proxy = str(proxy_hf_dir())
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "models/base_mcore/COMPLETE").is_file():
        if main(["convert", "hf-to-mcore", proxy, str(work / "models/base_mcore"), "--overwrite"]) != 0:
            raise SystemExit("importing the proxy failed")
    if not Path(f"{work}/shards/bilingual.manifest.json").is_file():
        write_lang_shards(work / "shards", tokenizer=proxy)
    recipe = yaml.safe_load((ROOT / "recipes/proxy/bilingual.yaml").read_text())
    recipe.pop("hooks", None)
    recipe["data"] = {"streams": [
        {"name": "en", "prefixes": ["shards/bilingual"], "filter": 'lang == "en"', "weight": 1.0},
        {"name": "zh", "prefixes": ["shards/bilingual"], "filter": 'lang == "zh"', "weight": 1.0}],
        "valid_holdout": 0.1, "valid_holdout_seed": 2, "eod_token_id": AutoTokenizer.from_pretrained(proxy).eos_token_id}
    recipe["training"].update(output_dir="probe", stage="probe")
    (work / "base.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    sweep = {"name": "lm_eval_probe", "workdir": str(work.resolve()), "model_from": "models/base_mcore",
             "base": [{"stage": "probe", "recipe": str((work / "base.yaml").resolve())}],
             "axes": {"zh": {"zh0": {"data.streams.1.weight": 0}, "zh50": {"data.streams.1.weight": 1.0}}},
             "seeds": [1, 2, 3], "seed_keys": ["training.seed", "data.streams.*.seed"],
             "evals": [{"name": "lm", "args": ["eval", "lm-eval", "{checkpoints}", "--tasks", "cpt_next_sentence",
                                               "--device", "cpu"]}],
             "report": {"baseline": "zh0", "metrics": METRICS}}
    path = work / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="work folder (built on first use; a rerun finishes the sweep)")
    args = p.parse_args()
    from cpt.cli import main as cpt

    work = Path(args.folder)
    sweep = build(work)
    load0, t0 = os.getloadavg(), time.perf_counter()
    code = cpt(["sweep", str(sweep), "--out", str(work / "sweep"), "--local-cpus", "1", "--cpus-per-task", "1"])
    if code != 0:
        return code
    report = json.loads((work / "sweep" / "report" / "report.json").read_text())
    out = {m: {"zh0": report["metrics"][m]["arms"]["zh0"].get("seeds"),
               "zh50": report["metrics"][m]["arms"]["zh50"].get("seeds"),
               "diff": {k: report["metrics"][m]["arms"]["zh50"]["vs_baseline"].get(k) for k in ("mean", "low", "high")},
               "verdict": report["metrics"][m]["arms"]["zh50"]["vs_baseline"]["verdict"]} for m in METRICS}
    from cpt.io import write_json_atomic

    record = {"probe": "lm_eval", "metrics": out, "seconds": round(time.perf_counter() - t0, 1),
              "loadavg_start": [round(x, 2) for x in load0], "loadavg_end": [round(x, 2) for x in os.getloadavg()]}
    write_json_atomic(work / "probe.json", record)  # the wall time tools/proxy_findings.py docs prints
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
