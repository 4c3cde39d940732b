#!/usr/bin/env python
"""Run the proxy sweeps of Llama-3-SynE's findings and write docs/proxy/README.md from their reports.

    python tools/proxy_findings.py run 4          # one finding's sweep (one run at a time), wall time recorded
    python tools/proxy_findings.py docs           # docs/proxy/README.md from `cpt sweep report` of every sweep

`run` calls `cpt sweep SWEEP.yaml --out DIR --executor local --local-cpus 1 --cpus-per-task 1` (one
training at a time on one thread: the machine is shared) and records its wall time and the load
average before and after in DIR/wall.json. `docs` writes, for each finding of
sweeps/llama3_synE_proxy/findings.yaml, `cpt sweep report DIR --baseline B` for every baseline its
claims name, and the finding's line (cpt.sweep.findings: reproduced / contradicted / not resolved at
this scale / not run yet), decided from the measured paired verdicts only. Needs the prepared folder
(`cpt sweep prepare runs/proxy --size tiny`).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FINDINGS = ROOT / "sweeps/llama3_synE_proxy/findings.yaml"
PREPARE = "cpt sweep prepare runs/proxy --size tiny"


def sweep_command(finding) -> list[str]:
    return ["cpt", "sweep", finding.sweep, "--out", finding.out, "--executor", "local", "--local-cpus", "1",
            "--cpus-per-task", "1"]


def run(key: str) -> int:
    from cpt.sweep.findings import finished_runs, load_findings, record_wall

    finding = next((f for f in load_findings(FINDINGS) if f.key == key), None)
    if finding is None:
        raise SystemExit(f"{FINDINGS}: no finding {key!r}")
    argv = sweep_command(finding)
    done0 = finished_runs(ROOT / finding.out)
    load0, t0 = list(os.getloadavg()), time.perf_counter()
    code = subprocess.call([sys.executable, "-m", "cpt.cli", *argv[1:]], cwd=ROOT)
    seconds, load1 = time.perf_counter() - t0, list(os.getloadavg())
    if code == 0:
        done = finished_runs(ROOT / finding.out)
        record_wall(ROOT / finding.out, seconds, load0, load1, shlex.join(argv), done - done0, done)
    print(json.dumps({"finding": key, "exit": code, "seconds": round(seconds, 1), "loadavg_start": load0,
                      "loadavg_end": load1}))
    return code


def _tables(sweep_dir: Path, baseline: str, metrics: list[str] | None) -> tuple[str, dict]:
    from cpt.sweep.driver import report_sweep
    from cpt.sweep.report import render_markdown

    report = report_sweep(sweep_dir, baseline, metrics, sweep_dir / f"report_vs_{baseline}")
    text = render_markdown(report, "", report.get("missing", []))
    body = (text.split("\n", 3)[3] if text.startswith("# ") else text).strip()  # the finding gives the title
    return re.sub(r"^## ", "#### ", body, flags=re.M), report


def _judge(finding, sweep_dir: Path) -> tuple[str, str, list[str]]:
    """The finding's line (cpt.sweep.findings.decide), its claims beside their measured verdicts, and
    the report tables against each baseline its claims name, from the sweep in `sweep_dir`."""
    from cpt.sweep.findings import decide, measured_verdict

    tables, reports = [], {}
    for baseline in dict.fromkeys(c.baseline for c in finding.claims):
        metrics = None if baseline == finding.claims[0].baseline else \
            sorted({c.metric for c in finding.claims if c.baseline == baseline})
        table, reports[baseline] = _tables(sweep_dir, baseline, metrics)
        tables += [f"### against {baseline}", "", table, ""]
    # in the claims' own order: the line names each claim beside its verdict
    pairs = [(c.expect, measured_verdict(reports[c.baseline], c)) for c in finding.claims]
    claims = "; ".join(f"{c.arm} vs {c.baseline} on {c.metric}: expected {e}, measured {m or 'absent'}"
                       for c, (e, m) in zip(finding.claims, pairs))
    return decide(pairs), claims, tables


def _section(finding, seen_walls: set[str], summary: list[str]) -> list[str]:
    from cpt.sweep.findings import WALL_FILE, wall_minutes

    sweep_dir = ROOT / finding.out
    lines = [f"## Finding ({finding.key}): {finding.title}", ""]
    command = shlex.join(sweep_command(finding))
    if not (sweep_dir / "results.jsonl").is_file():
        summary.append(f"| ({finding.key}) {finding.title} | not run yet | – |")
        return lines + ["**not run yet**", "", "```bash", PREPARE, command, "```", ""]
    result, claims, tables = _judge(finding, sweep_dir)
    lines += [f"**{result}** ({claims}).", ""]
    wall_path = sweep_dir / WALL_FILE
    wall = json.loads(wall_path.read_text()) if wall_path.is_file() else None
    summary.append(f"| ({finding.key}) {finding.title} | **{result}** | "
                   + (f"{wall_minutes(wall)}{' (same sweep as above)' if finding.out in seen_walls else ''}"
                      if wall else "–") + " |")
    if finding.notes:
        lines += [finding.notes, ""]
    if wall and finding.out not in seen_walls:
        lines += [f"Wall time of the sweep: {wall_minutes(wall)} on 2 shared CPU cores, one run at a time "
                  f"(load average {wall['loadavg_start'][0]:.1f} before, {wall['loadavg_end'][0]:.1f} after).", ""]
    elif finding.out in seen_walls:
        lines += ["Same sweep (and runs) as the finding above.", ""]
    seen_walls.add(finding.out)
    lines += ["```bash", PREPARE, command, *(f"cpt sweep report {finding.out} --baseline {b} --out "
                                            f"{finding.out}/report_vs_{b}"
                                            for b in dict.fromkeys(c.baseline for c in finding.claims)), "```", ""]
    return lines + tables


def _corruption(c: dict) -> str:
    """What error injection did: of which pairs, and which it spared."""
    if c.get("held_out"):
        return (f"; {c['corrupted']} of the {c['eligible']} trained answers made wrong (rate {c['rate']}; the "
                f"{c['held_out']} held-out pairs left clean, lending no answer)")
    return f"; {c.get('corrupted')} answers made wrong (rate {c.get('rate')}, drawn from all pairs)"


def data_section(folder: Path = ROOT / "runs/proxy") -> list[str]:
    """What the prepared folder holds: the proxy's pre-training and how much synthetic QA exists."""
    from cpt.sweep.prepare import SETTINGS

    lines = ["## The data and the model, as prepared", ""]
    marker = folder / "models/base_hf/cpt-proxy-complete.json"
    if marker.is_file():
        m = json.loads(marker.read_text())
        p = m["pretraining"]
        lines += [f"- Proxy `{m['key']}`: {m['parameters']:,} parameters; English pre-training {p['seconds']:.0f} s, "
                  f"loss {p['first_loss']} → {p['final_train_loss']} (held-out {p['valid_loss']}, PPL {p['valid_ppl']}).",
                  "- Its perplexity of the Chinese documents (`cpt score`, the LH/HL order) is far above its vocabulary "
                  "size: it has never read Chinese, so the curriculum orders by what an English model finds least "
                  "surprising, as a real base model meeting a new language would."]
    for name in ("science", "code", "c30/science", "c30/code", "c50/science", "c50/code"):
        summary = folder / "synth" / f"{name}.jsonl.summary.json"
        if summary.is_file():
            sm = json.loads(summary.read_text())
            corrupt = sm.get("corruption") or {}
            disciplines = ", ".join(f"{k} {v}" for k, v in (sm.get("by_discipline") or {}).items())
            rate = (f", {sm['tokens_generated_now']} tokens, {sm['tokens_generated_now'] / sm['seconds']:.1f} tok/s"
                    if sm.get("tokens_generated_now") and sm["seconds"] else "")
            resumed = (f" ({sm['generated_now']} generated in its last run, {sm['resumed_from_journal']} by earlier "
                       f"ones)" if sm.get("generated_now") and sm.get("resumed_from_journal") else "")
            lines.append(f"- synth/{name}.jsonl: {sm['pairs_kept']} QA pairs ({disciplines}) kept from {sm['tasks']} "
                         f"generations{resumed} of {sm['generator'] or 'the journal'} (SmolLM2-135M-Instruct, Q4_1 "
                         f"dequantized, on CPU; {sm['seconds']:.0f} s{rate}); rejected: {_rejections(sm)}"
                         + (_corruption(corrupt) if corrupt.get("rate") else "") + ".")
        elif name in ("science", "code"):
            lines.append(f"- synth/{name}.jsonl: not generated yet.")
    lines += ["- All synthetic QA here is model output of SmolLM2-135M-Instruct generated once in "
              "`cpt sweep prepare` (nothing templated, nothing from elsewhere): science QA from English snippets "
              "of the sweep corpus, their discipline from the topic tagger, at most "
              f"{SETTINGS['tiny'].synth_per_discipline} snippets per discipline and {SETTINGS['tiny'].synth_snippets} "
              "in all (cpt/sweep/prepare.py), the answer prefilled with `Question:` (the science templates v2); "
              "code QA from LeetCode problems. Half of the pairs are held out (recipes/proxy/synthetic.yaml) and "
              "`sciqa/answer_nll` scores the held-out pairs of kind `science`, the same for every arm, so the "
              "metric is paired. The generation budget is set for 2 CPU cores shared with other work "
              "(cpt/sweep/prepare.py; the lines above give each output's generation time and rate); more QA: raise it "
              "there, or prepare at --size gpu "
              "on a GPU.", ""]
    return lines


def _rejections(summary: dict) -> str:
    """A synth summary's nonzero rejection counts, largest first."""
    counts = sorted(((v, k) for k, v in (summary.get("rejected") or {}).items() if v), reverse=True)
    return ", ".join(f"{k} {v}" for v, k in counts) or "none"


LM_EVAL_PROBE = "runs/lm_eval_probe"


def lm_eval_section(folder: Path = ROOT / LM_EVAL_PROBE) -> list[str]:
    """Whether the demo's lm-eval tasks separate arms at this scale: tools/lm_eval_probe.py's sweep."""
    from cpt.eval.tasks import ITEMS_PER_LANGUAGE
    from cpt.sweep.driver import report_sweep
    from cpt.sweep.report import render_markdown

    lines = ["## The demo's lm-eval tasks at this scale", "",
             f"`cpt_next_sentence_en` / `_zh` ({ITEMS_PER_LANGUAGE} items each, 4 choices, chance 0.25) are a sweep eval like any "
             "`cpt eval` (README, Proxy experiments). Whether they can tell arms apart on this proxy is measured by "
             "`python tools/lm_eval_probe.py` (the docstring says how): the proxy, the proxy recipe's 96 steps of "
             "1024 tokens, and the widest mixture contrast there is — English only (`zh0`) against Chinese:English "
             "1:1 (`zh50`), 3 seeds, every item of both tasks.", ""]
    sweep_dir = folder / "sweep"
    if not (sweep_dir / "results.jsonl").is_file():
        return lines + ["**not run yet**", "", "```bash", f"python tools/lm_eval_probe.py {LM_EVAL_PROBE}", "```", ""]
    report = report_sweep(sweep_dir, "zh0", None, sweep_dir / "report_vs_zh0")
    table = render_markdown(report, "", report.get("missing", []))
    body = (table.split("\n", 3)[3] if table.startswith("# ") else table).strip()
    verdicts = {m: e["arms"]["zh50"].get("vs_baseline", {}).get("verdict") for m, e in report["metrics"].items()}
    means = {m: [e["arms"][a].get("mean") for a in ("zh0", "zh50")] for m, e in report["metrics"].items()}
    for code, source in (("en", "gensim's Wikipedia sample"), ("zh", "People's Daily (January 1998)")):
        acc = f"lm/cpt_next_sentence_{code}/acc"
        if acc not in verdicts:
            continue
        lines.append(f"- `cpt_next_sentence_{code}`: acc {means[acc][0]:.3f} (zh0) vs {means[acc][1]:.3f} (zh50), "
                     f"{verdicts[acc]}; acc_norm {verdicts.get(acc + '_norm')}. Its items are sentence pairs of "
                     f"{source}, a source the sweep corpus trains on.")
    at_chance = [f"`cpt_next_sentence_{code}`" for code in ("en", "zh")
                 if (e := report["metrics"].get(f"lm/cpt_next_sentence_{code}/acc"))
                 and all(v == 0.25 for a in e["arms"].values() for v in a["seeds"].values())]
    if at_chance:
        lines.append(f"- On {' and '.join(at_chance)} every run of both arms scored exactly 0.25: what any model that "
                     "ranks the four sentences the same way whatever the context scores on these items (they come in "
                     "sets of four showing the same sentences). At this scale the proxy's choice shows no sign of "
                     "using the context sentence, so the task cannot rank arms here; it would once a model uses it.")
    separates = {code: verdicts.get(f"lm/cpt_next_sentence_{code}/acc") in ("better", "worse") for code in ("en", "zh")}
    lines += [f"- For comparison, held-out perplexity: ppl/zh {verdicts.get('ppl/zh')}, ppl/en {verdicts.get('ppl/en')}.",
              "- Hence no shipped sweep runs the built-in tasks. " + " ".join(
                  f"The {'English' if code == 'en' else 'Chinese'} task "
                  + ("separates even this widest contrast at this scale." if separates[code] else
                     "cannot separate arms at this scale: even the widest contrast shows no significant difference.")
                  for code in ("en", "zh"))
              + " And every item of the Chinese one is a sentence pair of the People's Daily articles the sweep "
              "corpus trains on, whose arms read different parts: there it would measure which arm happened to read "
              "the items' articles. The curriculum sweeps use `cpt_heldout_next_sentence_zh` instead (`cpt eval "
              "lm-eval --heldout-from`), built the same way from the documents their recipe holds out.",
              ""]
    if (folder / "probe.json").is_file():
        probe = json.loads((folder / "probe.json").read_text())
        lines += [f"Wall time of the probe: {probe['seconds'] / 60:.1f} min on 2 shared CPU cores, one run at a time "
                  f"(load average {probe['loadavg_start'][0]:.1f} before, {probe['loadavg_end'][0]:.1f} after).", ""]
    lines += ["```bash", f"python tools/lm_eval_probe.py {LM_EVAL_PROBE}", "```", "",
              re.sub(r"^## ", "#### ", body, flags=re.M), ""]
    return lines


# Findings whose shipped sweep also ran, in part, at --size gpu (SmolLM2-135M) on this 2-core machine:
# the sweep's folder there. The same sweep file with --workdir runs/proxy_gpu --out FOLDER runs the rest
# and keeps what is done (the runs' fingerprints are the shipped sweep's).
GPU_SIZE_RUNS = {"1": "runs/gpu_probe/synthetic_share", "3": "runs/gpu_probe/synthetic_share",
                 "2": "runs/gpu_probe/corrupt_rate"}
PREPARE_GPU = "cpt sweep prepare runs/proxy_gpu --size gpu"


def reused_sweeps(rows: list[dict]) -> dict[str, int]:
    """Sweep folders (relative to ROOT where inside it) whose runs trained stages of these runs
    (`cpt sweep --reuse-from`), with how many runs took stages from each."""
    out: dict[str, int] = {}
    for row in rows:
        for source in {Path(p).parents[3] for p in (row.get("reused_stages") or {}).values()}:
            name = str(source.relative_to(ROOT)) if source.is_relative_to(ROOT) else str(source)
            out[name] = out.get(name, 0) + 1
    return out


def gpu_size_section(findings: list, summary: list[str]) -> list[str]:
    """The findings of GPU_SIZE_RUNS at SmolLM2 size: the same claims, decided the same way, on the
    runs that exist (fewer arms and seeds than the tiny proxy's: each run takes about 20 min on CPU)."""
    lines = ["## At SmolLM2-135M size (`--size gpu`), run on CPU", "",
             "The same sweep files with `--workdir runs/proxy_gpu`: SmolLM2-135M itself instead of the tiny proxy, "
             "its own tokenizer, the prepared size's learning rates (`recipe_overrides.yaml`: peak 1e-4), the same "
             "corpus and the same synthetic QA. Meant for a GPU; part of one sweep ran here on 2 CPU cores, one "
             "run at a time.", ""]
    for finding in findings:
        if finding.key not in GPU_SIZE_RUNS:
            continue
        folder = GPU_SIZE_RUNS[finding.key]
        command = shlex.join([*sweep_command(finding)[:3], "--workdir", "runs/proxy_gpu", "--out", folder,
                              "--local-cpus", "2", "--cpus-per-task", "2"])
        lines += [f"### Finding ({finding.key}) at SmolLM2 size: {finding.title}", ""]
        sweep_dir = ROOT / folder
        title = f"({finding.key}) at SmolLM2-135M size (`--size gpu`)"
        if not (sweep_dir / "results.jsonl").is_file():
            summary.append(f"| {title} | not run yet | – |")
            lines += ["**not run yet**", "", "```bash", PREPARE_GPU, command, "```", ""]
            continue
        result, claims, tables = _judge(finding, sweep_dir)
        rows = [json.loads(line) for line in (sweep_dir / "results.jsonl").read_text().splitlines() if line.strip()]
        reused = reused_sweeps(rows)
        if reused:
            command = shlex.join([*shlex.split(command), *(a for d in reused for a in ("--reuse-from", d))])
        arms = sorted({r["arm"] for r in rows})
        seeds = sorted({r["seed"] for r in rows})
        stage_s = [s for r in rows for s in (r.get("stage_seconds") or {}).values()]
        summary.append(f"| {title}, {len(rows)} runs | **{result}** | "
                       + (f"{sum(stage_s) / 60:.1f} min in runs (below)" if stage_s else "–") + " |")
        lines += [f"**{result}** ({claims}).", "",
                  f"Runs: {len(rows)} (arms {', '.join(arms)}; seeds {', '.join(map(str, seeds))}), each "
                  + (f"{min(stage_s) / 60:.0f}-{max(stage_s) / 60:.0f} min in training and validation on 2 shared "
                     "CPU cores." if stage_s else "timed nowhere.")
                  + "".join(f" {n} of them took their training from {d}'s runs of the same recipe files "
                            "(`--reuse-from`), their evals run here." for d, n in reused.items()), "",
                  "```bash", PREPARE_GPU, command, "```", "", *tables]
    return lines


def _prepare_line(folder: Path = ROOT / "runs/proxy") -> str:
    """The prepared folder's step times (cpt.demo.runner markers), the one-off cost before any sweep."""
    steps = {p.stem: json.loads(p.read_text()).get("seconds", 0.0) for p in sorted((folder / "steps").glob("*.json"))}
    if not steps:
        return "The proxy folder has not been prepared here yet."
    synth = sum(v for k, v in steps.items() if k.startswith("synth"))
    return (f"One-off preparation (`{PREPARE}`, last run of each step): {sum(steps.values()) / 60:.1f} min, of which "
            f"synthetic QA generation {synth / 60:.1f} min; the proxy's own English pre-training is cached "
            f"separately (see below). Preparation and sweeps (one training at a time on one thread each) shared the "
            f"two cores with each other and with other work: every wall time here is an upper bound for a quiet "
            f"machine.")


def docs(out: Path) -> int:
    from cpt.io import write_text_atomic
    from cpt.sweep.findings import load_findings

    head = [
        "# Llama-3-SynE's proxy findings, measured on our proxy",
        "",
        "Generated by `python tools/proxy_findings.py docs` from `cpt sweep report` of each sweep "
        "(sweeps/llama3_synE_proxy/). Each table: every arm's mean over seeds with its 95% t interval, and the "
        "paired difference with the baseline arm on the same seeds, labelled better / worse / no significant "
        "difference (lower is better for perplexity and answer NLL). A finding's line is decided by those "
        "labels only (cpt.sweep.findings): reproduced, contradicted, or not resolved at this scale.",
        "",
        "The proxy (`cpt sweep prepare runs/proxy --size tiny`): a 1.8M-parameter Llama (4 layers, width 128) "
        "with its own 8192-entry byte-level BPE trained on the sweep corpus, pre-trained once on its English "
        "side (400 steps of 2048 tokens); each run continues it for 96 steps of 1024 tokens (ZH:EN 2:8; finding "
        "(4p) and (4b): Chinese only, one pass over its sample of the documents, 89-106 steps). The "
        "corpus: People's Daily in full (3746 documents), every gensim Wikipedia article piece and the Python "
        "reference (1753), every LeetCode problem (1405), 194 newsgroup posts as an English probe no arm trains "
        "on. A proxy this small answers the question 'does the method move held-out likelihood the way the "
        "paper says', not the paper's benchmark scores.",
        "",
    ]
    body: list[str] = data_section()
    seen: set[str] = set()
    summary = ["| finding | at this scale | sweep wall time |", "|---|---|---|"]
    for finding in load_findings(FINDINGS):
        body += _section(finding, seen, summary)
    body += lm_eval_section()
    body += gpu_size_section(load_findings(FINDINGS), summary)
    head += ["## Summary", "", *summary, "", _prepare_line(), ""]
    write_text_atomic(out, "\n".join(head + body).rstrip() + "\n")
    print(f"wrote {out}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run one finding's sweep and record its wall time")
    r.add_argument("key", help="the finding's key in findings.yaml (1..6)")
    d = sub.add_parser("docs", help="write docs/proxy/README.md")
    d.add_argument("--out", default=str(ROOT / "docs/proxy/README.md"))
    args = p.parse_args()
    return run(args.key) if args.command == "run" else docs(Path(args.out))


if __name__ == "__main__":
    raise SystemExit(main())
