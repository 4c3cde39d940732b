"""`cpt report RUN_DIR [RUN_DIR ...]`: plots and a markdown/JSON summary of a (multi-stage) run."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folders", nargs="+", metavar="RUN_DIR",
                   help="run folders (training.output_dir), one per stage, e.g. runs/demo/stage1 runs/demo/stage2")
    p.add_argument("--out", default=None,
                   help="report folder (default: RUN_DIR/report with one folder; required with several)")


def run(args: argparse.Namespace) -> int:
    from cpt.report import write_report

    if args.out is None and len(args.folders) > 1:
        raise ValueError("--out is required with several run folders (where should the report go?)")
    out = Path(args.out) if args.out is not None else Path(args.folders[0]) / "report"
    summary = write_report(args.folders, out)
    t, v = summary["totals"], summary["validation"]
    print(f"cpt report: {len(summary['stages'])} stage(s), final step {t['final_step']}, "
          f"{t['final_tokens']:,} tokens, {v['evals']} evaluations")
    for name, entry in v["streams"].items():
        change = "n/a" if entry["change_pct"] is None else f"{entry['change_pct']:+.1f}%"
        print(f"  {name:<24} ppl {entry['first']['ppl']:.3f} -> {entry['last']['ppl']:.3f} ({change})")
    for name, why in summary["skipped_plots"].items():
        print(f"  skipped plot {name}: {why}")
    for note in summary["notes"]:
        print(f"  note: {note}")
    print(f"wrote {out / 'summary.md'}, {out / 'summary.json'} and {len(summary['plots'])} plots")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cpt report", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
