"""`cpt eval lm-eval MODEL --tasks ...`, `cpt eval ppl --model MODEL --recipe RECIPE` and
`cpt eval qa-nll --model MODEL --recipe RECIPE --stream NAME` (answer NLL of held-out QA pairs).

MODEL is a local HF folder, or a megatron-core checkpoint (a `checkpoints/step_N` folder, or a run's
`checkpoints` folder for its latest): a checkpoint is exported to a temporary HF folder beside
--out with the existing converter, then removed. Its tokenizer comes from --hf-reference, else from
the checkpoint's own `hf/` copy (imports), else from the import folder its run started from
(`training.load` recorded in the checkpoint, followed through earlier stages).

Results are JSON written atomically to --out. `ppl --compare BEFORE.json` prints a before/after
table (e.g. base model vs the trained model) and keeps it in the output under `compare`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="eval_command", metavar="KIND", required=True)
    lm = sub.add_parser("lm-eval", help="lm-evaluation-harness tasks on a model (needs: pip install 'cpt[eval]')")
    lm.add_argument("model", help="HF model folder (or megatron checkpoint, exported first)")
    lm.add_argument("--tasks", required=True,
                    help="comma-separated task/group/tag names; built in: cpt_next_sentence (_en, _zh)")
    lm.add_argument("--include-path", action="append", default=[],
                    help="folder of extra task YAML files (repeatable); local datasets: dataset_path: json")
    lm.add_argument("--heldout-from", default=None, metavar="RECIPE",
                    help="also build cpt_heldout_next_sentence_<lang> from the documents RECIPE's streams hold out "
                         "(no run of that recipe trained on them); name it in --tasks")
    lm.add_argument("--heldout-streams", default=None, help="comma-separated streams of --heldout-from to draw from")
    lm.add_argument("--heldout-lang", default=None, choices=["en", "zh"], help="language of those streams' text")
    lm.add_argument("--heldout-items", type=int, default=100, help="items of the held-out task (a multiple of 4: items come in choice sets of 4)")
    lm.add_argument("--limit", type=int, default=None,
                    help="only the first N documents of each task (the next-sentence tasks: a multiple of 4 keeps "
                         "whole choice sets, so a context-free model scores exactly 0.25)")
    lm.add_argument("--num-fewshot", type=int, default=None, help="few-shot examples (default: the task's)")
    lm.add_argument("--batch-size", type=int, default=8, help="requests per forward pass")
    _add_model_arguments(lm)
    lm.add_argument("--out", required=True, help="results JSON to write")
    pp = sub.add_parser("ppl", help="per-stream perplexity on the held-out documents of a recipe's streams")
    pp.add_argument("--model", required=True, help="HF model folder or megatron checkpoint")
    pp.add_argument("--recipe", required=True, help="recipe YAML whose data.streams define the streams")
    pp.add_argument("--max-documents", type=int, default=None,
                    help="score at most N held-out documents per stream, evenly spaced (default: all)")
    pp.add_argument("--max-doc-tokens", type=int, default=None, help="score only the first N tokens of a document")
    pp.add_argument("--max-length", type=int, default=2048, help="context window (capped at the model's)")
    pp.add_argument("--stride", type=int, default=None, help="window step for long documents (default max-length/2)")
    pp.add_argument("--max-batch-tokens", type=int, default=None,
                    help="padded tokens per forward pass (default 2048 on CPU, 65536 on GPU)")
    pp.add_argument("--valid-holdout", type=float, default=None,
                    help="held-out share (default: the recipe's data.valid_holdout; must equal training's)")
    pp.add_argument("--valid-holdout-seed", type=int, default=None,
                    help="held-out seed (default: the recipe's data.valid_holdout_seed)")
    pp.add_argument("--compare", default=None, metavar="BEFORE.json",
                    help="a previous `cpt eval ppl` result: print a before/after table with %% change")
    _add_model_arguments(pp)
    pp.add_argument("--out", required=True, help="results JSON to write")
    qa = sub.add_parser("qa-nll", help="answer NLL given the question on a recipe stream's held-out QA pairs")
    qa.add_argument("--model", required=True, help="HF model folder or megatron checkpoint")
    qa.add_argument("--recipe", required=True, help="recipe YAML naming the stream and its held-out split")
    qa.add_argument("--stream", required=True, help="the stream of QA documents (metadata: question, answer)")
    qa.add_argument("--prefixes", nargs="+", default=None,
                    help="read the stream's documents from these shard prefixes instead of the recipe's (e.g. the "
                         "clean QA of an arm that trained on a corrupted copy: same doc ids, same held-out pairs)")
    qa.add_argument("--where", default=None, help="metadata expression narrowing the pairs, e.g. 'kind == \"qa\"'")
    qa.add_argument("--max-length", type=int, default=512, help="context window (capped at the model's)")
    _add_model_arguments(qa)
    qa.add_argument("--out", required=True, help="results JSON to write ({\"metrics\": {...}, ...})")


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hf-reference", default=None,
                   help="for a checkpoint: HF folder (or import folder) with the config and tokenizer")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--dtype", default=None, help="float32 / bfloat16 (default: bf16 on GPU, fp32 on CPU)")


def run(args: argparse.Namespace) -> int:
    from cpt.eval.harness import LmEvalMissing

    try:
        if args.eval_command == "qa-nll":
            return _run_qa_nll(args)
        return _run_lm_eval(args) if args.eval_command == "lm-eval" else _run_ppl(args)
    except LmEvalMissing as exc:
        print(f"cpt eval: error: {exc}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------------------------- lm-eval


def _run_lm_eval(args: argparse.Namespace) -> int:
    from cpt.annotate.modelfiles import pick_device
    from cpt.eval.harness import HarnessConfig, import_lm_eval, run_harness

    out = Path(args.out)
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    import_lm_eval()  # say what to install before exporting a checkpoint
    device = pick_device(args.device)
    config_kwargs = dict(tasks=tasks, include_paths=tuple(args.include_path), limit=args.limit,
                         num_fewshot=args.num_fewshot, batch_size=args.batch_size, device=device,
                         dtype=args.dtype or ("bfloat16" if device.startswith("cuda") else "float32"))
    HarnessConfig(model_dir=args.model, **config_kwargs)  # validate the options first
    with heldout_task(args, tasks, out.parent) as (include, heldout), \
            hf_model_folder(args.model, args.hf_reference, out.parent) as (model_dir, source):
        config_kwargs["include_paths"] += include
        result = run_harness(HarnessConfig(model_dir=str(model_dir), **config_kwargs))
    result.update(source)
    if heldout:
        result["heldout_task"] = heldout
    _write(out, result)
    for task, metrics in sorted(result["tasks"].items()):
        shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()
                          if isinstance(v, float) and k != "version" and not k.endswith("_stderr"))
        print(f"{task}: {shown} (n={metrics.get('samples')})")
    print(f"wrote {out}")
    return 0


@contextmanager
def heldout_task(args: argparse.Namespace, tasks: tuple[str, ...], beside: Path) -> Iterator[tuple[tuple[str, ...], dict]]:
    """The held-out task folder of --heldout-from (built in a temporary folder beside the results,
    removed after) as an include path, and its provenance; nothing when the option is not given."""
    from cpt.eval.tasks.heldout import build_heldout_task, heldout_task_name

    if args.heldout_from is None:
        if args.heldout_streams or args.heldout_lang:
            raise ValueError("--heldout-streams/--heldout-lang need --heldout-from RECIPE")
        yield (), {}
        return
    if not args.heldout_streams or not args.heldout_lang:
        raise ValueError("--heldout-from needs --heldout-streams and --heldout-lang")
    name = heldout_task_name(args.heldout_lang)
    if name not in tasks:
        raise ValueError(f"--heldout-from builds {name}: name it in --tasks")
    streams = [s.strip() for s in args.heldout_streams.split(",") if s.strip()]
    beside.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".heldout-task-", dir=beside) as tmp:
        folder = Path(tmp) / name
        info = build_heldout_task(args.heldout_from, streams, args.heldout_lang, args.heldout_items, folder)
        print(f"{name}: {info['items']} items from {info['documents_used']} of the {info['held_out_documents']} "
              f"documents {args.heldout_from} holds out of {', '.join(streams)}")
        yield (str(folder),), info


# ----------------------------------------------------------------------------------------- ppl


def _run_ppl(args: argparse.Namespace) -> int:
    from cpt.annotate.perplexity import PerplexityAnnotatorFactory, hf_encoder, make_windows
    from cpt.config import load_recipe
    from cpt.eval.heldout import heldout_documents
    from cpt.eval.ppl import compare, format_compare, print_progress, result_rows, stream_perplexity

    start = time.perf_counter()
    out = Path(args.out)
    before = _read_json(args.compare) if args.compare else None
    if before is not None:
        result_rows(before, f"--compare {args.compare}")  # a wrong file fails now, not after scoring
    recipe = load_recipe(args.recipe)
    # data.valid_holdout / valid_holdout_seed: read with defaults so older recipes load
    fraction, seed = args.valid_holdout, args.valid_holdout_seed
    if fraction is None:
        fraction = getattr(recipe.data, "valid_holdout", 0.0)
    if seed is None:
        seed = getattr(recipe.data, "valid_holdout_seed", 0)
    streams = heldout_documents(recipe.data.streams, fraction, seed, args.max_documents)
    if args.stride:
        make_windows([0, 0], args.max_length, args.stride)  # a bad stride fails before any model loads
    with hf_model_folder(args.model, args.hf_reference, out.parent) as (model_dir, source):
        factory = PerplexityAnnotatorFactory(str(model_dir), "hf", args.device, args.dtype, args.max_length,
                                             args.stride, args.max_batch_tokens)
        scorer = factory.build_scorer()
        result = stream_perplexity(streams, scorer, hf_encoder(str(model_dir)), args.stride, args.max_doc_tokens,
                                   progress=print_progress)
    result = {
        **source, "recipe": str(args.recipe), "valid_holdout": fraction, "valid_holdout_seed": seed,
        "stream_valid_holdout": {s.name: s.valid_holdout for s in recipe.data.streams if s.valid_holdout is not None},
        "max_documents": args.max_documents, "max_doc_tokens": args.max_doc_tokens,
        "max_length": scorer.max_length, "stride": args.stride or max(1, scorer.max_length // 2),
        "device": scorer.device, "dtype": str(next(scorer.model.parameters()).dtype).removeprefix("torch."),
        **result, "metrics": _ppl_metrics(result),
        "seconds": round(time.perf_counter() - start, 3), "time": time.time(),
    }
    print(_ppl_table(result))
    if before is not None:
        rows = compare(before, result, str(args.compare), str(out))
        result["compare"] = {"before": str(args.compare), "rows": rows}
        print(f"\nbefore: {args.compare} ({before.get('model')})\nafter:  {out} ({result['model']})")
        print(format_compare(rows))
    _write(out, result)
    print(f"wrote {out}")
    return 0


def _run_qa_nll(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from cpt.annotate.perplexity import HFScorer
    from cpt.config import load_recipe
    from cpt.eval.qa_nll import answer_nll, heldout_pairs

    start = time.perf_counter()
    out = Path(args.out)
    recipe = load_recipe(args.recipe)
    spec = {s.name: s for s in recipe.data.streams}.get(args.stream)
    if spec is None:
        raise ValueError(f"{args.recipe}: no stream {args.stream!r} (streams: {', '.join(s.name for s in recipe.data.streams)})")
    fraction, seed = recipe.data.valid_holdout, recipe.data.valid_holdout_seed
    if args.prefixes:
        spec = dataclasses.replace(spec, prefixes=list(args.prefixes))
    pairs = heldout_pairs(spec, fraction, seed, args.where)
    with hf_model_folder(args.model, args.hf_reference, out.parent) as (model_dir, source):
        scorer = HFScorer(str(model_dir), args.device, args.dtype, args.max_length)
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        metrics = answer_nll(pairs, scorer, lambda t: tokenizer(t, add_special_tokens=False)["input_ids"])
    result = {**source, "recipe": str(args.recipe), "stream": args.stream, "prefixes": spec.prefixes, "where": args.where,
              "valid_holdout": fraction if spec.valid_holdout is None else spec.valid_holdout,  # the share applied
              "valid_holdout_seed": seed, "max_length": scorer.max_length,
              "metrics": metrics, "seconds": round(time.perf_counter() - start, 3), "time": time.time()}
    _write(out, result)
    print(f"answer NLL {metrics['answer_nll']:.4f} nats/token over {metrics['pairs']} held-out pairs "
          f"({metrics['answer_tokens']} answer tokens); wrote {out}")
    return 0


def _ppl_metrics(result: dict[str, Any]) -> dict[str, float]:
    """Flat figures as every `cpt eval` gives them (what `cpt sweep` collects; all lower-is-better):
    `ppl` and `mean_doc_ppl` overall, `ppl/STREAM` and `mean_doc_ppl/STREAM` per stream that scored
    any document."""
    rows = {**{f"/{name}": r for name, r in result["streams"].items()}, "": result["overall"]}
    return {f"{key}{suffix}": r[key] for suffix, r in rows.items() for key in ("ppl", "mean_doc_ppl")
            if r.get(key) is not None}


def _ppl_table(result: dict[str, Any]) -> str:
    rows = {**result["streams"], "overall": result["overall"]}
    width = max(len(n) for n in rows)
    lines = [f"{'stream':<{width}}  {'docs':>6}  {'tokens':>9}  {'ppl':>10}  {'mean doc ppl':>12}"]
    for name, r in rows.items():
        ppl = "-" if r["ppl"] is None else f"{r['ppl']:.3f}"
        mean = "-" if r["mean_doc_ppl"] is None else f"{r['mean_doc_ppl']:.3f}"
        skipped = f"  skipped {r['skipped']}" if r["skipped"] else ""
        lines.append(f"{name:<{width}}  {r['documents']:>6}  {r['tokens']:>9}  {ppl:>10}  {mean:>12}{skipped}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- model folders


@contextmanager
def hf_model_folder(model: str, hf_reference: str | None, scratch_parent: Path) -> Iterator[tuple[Path, dict]]:
    """(HF folder, description of where it came from) for an HF folder or a megatron checkpoint.

    A checkpoint is exported into a temporary folder under `scratch_parent` (the output's folder:
    /tmp may be too small for a large model), removed on exit."""
    from cpt.annotate.modelfiles import check_model_dir

    path = Path(model)
    if not path.exists():
        raise FileNotFoundError(f"model {path} does not exist (an HF folder or a megatron checkpoint)")
    if (path / "config.json").is_file() or not _looks_like_checkpoint(path):
        yield check_model_dir(path, "model"), {"model": str(path.resolve())}
        return
    from cpt.train.checkpoint import resolve_load_path
    from megatron_ext.convert import ConversionError, mcore_to_hf

    ckpt = resolve_load_path(path)
    reference = Path(hf_reference) if hf_reference else _recorded_reference(ckpt)
    if reference is None:
        raise ValueError(f"{ckpt}: a megatron checkpoint needs a tokenizer to be evaluated and none is recorded "
                         "in it; pass --hf-reference HF_DIR (the HF folder the run started from)")
    scratch_parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".cpt-eval-export-", dir=scratch_parent))
    try:
        try:
            summary = mcore_to_hf(ckpt, scratch / "hf", hf_reference=reference)
        except ConversionError as exc:
            raise ValueError(str(exc)) from None
        state = json.loads((ckpt / "trainer_state.json").read_text())
        print(f"exported {ckpt} to a temporary HF folder ({summary['seconds']} s)", file=sys.stderr)
        yield check_model_dir(scratch / "hf", "exported model"), {
            "model": str(path.resolve()), "checkpoint": str(ckpt.resolve()), "checkpoint_step": state.get("step"),
            "consumed_tokens": state.get("consumed_tokens"), "hf_reference": summary["reference"]}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _looks_like_checkpoint(path: Path) -> bool:
    return any((p / "trainer_state.json").is_file() or (p / "latest").exists()
               for p in (path, path / "checkpoints"))


def _recorded_reference(ckpt: Path, hops: int = 8) -> Path | None:
    """An HF reference recorded by the checkpoint: its own `hf/` (an import), else the folder its run
    started from (`recipe.training.load`), followed back through earlier stages."""
    from cpt.train.checkpoint import resolve_load_path

    for _ in range(hops):
        if (ckpt / "hf" / "config.json").is_file():
            return ckpt / "hf"
        try:
            state = json.loads((ckpt / "trainer_state.json").read_text())
        except (OSError, ValueError):
            return None
        load = ((state.get("recipe") or {}).get("training") or {}).get("load")
        if not load:
            return None
        try:
            ckpt = resolve_load_path(load)
        except FileNotFoundError:
            return None
    return None


def _read_json(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"--compare {path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"--compare {path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--compare {path}: not a `cpt eval ppl` result")
    return data


def _write(path: Path, data: dict[str, Any]) -> None:
    from cpt.shards.manifest import write_json_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, data)
