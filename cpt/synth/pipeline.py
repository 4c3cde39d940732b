"""Running synthesis: generate what the journal lacks, then finalize the journal into the output.

Generation only appends raw completions to the journal (`OUTPUT.journal.jsonl`). Finalization reads
the journal in work-list order and does everything else — parse, filter, dedup, inject errors —
then writes `OUTPUT` atomically and `OUTPUT.summary.json` last. Splitting it so makes a run
idempotent: the output depends on the journal and the settings, never on the order in which
concurrent requests finished or on where an earlier run was killed; and changing a filter setting
re-finalizes without generating again.
"""
from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from cpt.io import write_json_atomic, write_jsonl_atomic
from cpt.synth.corrupt import HoldoutSplit, corrupt, format_pair
from cpt.synth.filters import REJECTION_REASONS, FilterConfig, PairFilter
from cpt.synth.generators.base import ChatRequest, Generator, SamplingParams
from cpt.synth.journal import Journal, JournalError
from cpt.synth.parse import parse_code_answer, parse_qa
from cpt.synth.tasks import Task

SUMMARY_VERSION = 1
SYNTHETIC_LANG = "synthetic"
"""The `lang` of every output record: `cpt preprocess` reads it into the shard metadata."""


def journal_path(output: Path) -> Path:
    return output.with_name(output.name + ".journal.jsonl")


def summary_path(output: Path) -> Path:
    return output.with_name(output.name + ".summary.json")


@dataclass
class Progress:
    """Live counters printed while generating."""

    total: int
    done_before: int
    generated: int = 0
    failed: int = 0
    tokens: int = 0
    pairs_kept: int = 0
    rejected: Counter = field(default_factory=Counter)
    start: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        dt = max(time.monotonic() - self.start, 1e-9)
        rej = " ".join(f"{k}={v}" for k, v in sorted(self.rejected.items())) or "none"
        return (f"[synth] {self.done_before + self.generated}/{self.total} generations "
                f"({self.failed} failed), {self.pairs_kept} pairs kept, {self.pairs_kept / dt:.2f} pairs/s, "
                f"{self.tokens / dt:.1f} tok/s, rejected: {rej}")


def judge_completion(task_kind: str, text: str, context: str, judge: PairFilter,
                     rejected: Counter) -> list[tuple[int, str, str]]:
    """Kept `(pair_index, question, answer)` of one completion; rejections counted by reason."""
    kept = []
    if task_kind == "code":
        pair = parse_code_answer(text)
        if pair is None:
            rejected["malformed"] += 1
            return kept
        reason = judge.judge(context, pair.answer, None, question_generated=False)
        if reason:
            rejected[reason] += 1
        else:
            kept.append((0, context, pair.answer))
        return kept
    pairs = parse_qa(text)
    if not pairs:
        rejected["malformed"] += 1
    for i, p in enumerate(pairs):
        reason = "malformed" if p.malformed else judge.judge(p.question, p.answer, context)
        if reason:
            rejected[reason] += 1
        else:
            kept.append((i, p.question, p.answer))
    return kept


def _check_unique(tasks: Sequence[Task]) -> None:
    """Two tasks with one key would overwrite each other's records: refuse before generating."""
    seen: set[str] = set()
    for t in tasks:
        if t.key in seen:
            raise ValueError(f"two work items share the key {t.key!r}: the inputs hold two documents with "
                             f"doc id {t.doc_id!r}; give them distinct ids")
        seen.add(t.key)


def check_prompts(tasks: Sequence[Task], journal: Journal) -> None:
    """Refuse to mix outputs of two different templates that carry the same version."""
    for t in tasks:
        rec = journal.records.get(t.key)
        if rec is not None and rec.get("prompt_sha") != t.prompt.sha:
            raise JournalError(
                f"{journal.path}: prompt {t.prompt.tag} ({t.prompt.source}) changed since its records were "
                f"journaled (sha {rec.get('prompt_sha')} -> {t.prompt.sha}); raise the version in the "
                f"template header to generate anew, or restore the old text"
            )


def generate(tasks: Sequence[Task], generator: Generator, journal: Journal, params: SamplingParams,
             filter_config: FilterConfig, progress_every_s: float = 10.0, chunk_size: int = 256,
             log: Callable[[str], None] | None = None) -> Progress:
    """Generate every task not yet journaled, journaling each completion as it arrives."""
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    todo = [t for t in tasks if t.key not in journal]
    prog = Progress(total=len(tasks), done_before=len(tasks) - len(todo))
    judge = PairFilter(filter_config)
    by_key = {t.key: t for t in todo}
    last = time.monotonic()
    for i in range(0, len(todo), chunk_size):
        chunk = todo[i:i + chunk_size]
        requests = [ChatRequest(t.key, t.messages, t.seed) for t in chunk]
        for c in generator.generate(requests, params):
            if c.error is not None:
                prog.failed += 1
                prog.rejected["generation_failed"] += 1
                log(f"[synth] {c.key}: generation failed after {c.attempts} attempt(s): {c.error}")
                continue
            t = by_key[c.key]
            journal.append({
                "key": t.key, "kind": t.kind, "snippet_id": t.snippet_id, "doc_id": t.doc_id,
                "discipline": t.discipline, "prompt_version": t.prompt.tag, "prompt_sha": t.prompt.sha,
                "sample_index": t.sample_index, "generator": generator.name, "text": c.text,
                "n_tokens": c.n_tokens, "attempts": c.attempts, "context": t.context,
            })
            prog.generated += 1
            prog.tokens += c.n_tokens
            prog.pairs_kept += len(judge_completion(t.kind, c.text, t.context, judge, prog.rejected))
            if time.monotonic() - last >= progress_every_s:
                log(prog.line())
                last = time.monotonic()
    log(prog.line())
    return prog


def finalize(tasks: Sequence[Task], journal: Journal, filter_config: FilterConfig,
             corrupt_rate: float = 0.0, corrupt_seed: int = 0,
             holdout: HoldoutSplit | None = None) -> tuple[list[dict], dict]:
    """Output records and counts from the journal, in work-list order (records[i] is line i+1)."""
    judge = PairFilter(filter_config)
    rejected: Counter = Counter({r: 0 for r in REJECTION_REASONS})
    records: list[dict] = []
    parsed_generations = 0
    for t in tasks:
        rec = journal.records.get(t.key)
        if rec is None:
            continue
        parsed_generations += 1
        for pair_index, q, a in judge_completion(rec["kind"], rec["text"], rec["context"], judge, rejected):
            records.append({
                "id": f"{t.key}|{pair_index}", "text": format_pair(q, a), "question": q, "answer": a,
                "lang": SYNTHETIC_LANG,
                "discipline": rec["discipline"], "kind": rec["kind"], "source_doc_id": rec["doc_id"],
                "snippet_id": rec["snippet_id"], "generator": rec["generator"],
                "prompt_version": rec["prompt_version"], "sample_index": rec["sample_index"],
                "pair_index": pair_index,
            })
    report = corrupt(records, corrupt_rate, corrupt_seed, holdout)
    task_keys = {t.key for t in tasks}
    counts = {
        "generations_journaled": parsed_generations,
        "journal_records_outside_work_list": sum(k not in task_keys for k in journal.records),
        "pairs_kept": len(records),
        "rejected": dict(rejected),
        "by_discipline": dict(sorted(Counter(r["discipline"] for r in records).items())),
        "corruption": report.as_dict(),
    }
    return records, counts


def run(tasks: Sequence[Task], generator: Generator | Callable[[], Generator] | None, output: Path,
        params: SamplingParams, filter_config: FilterConfig, corrupt_rate: float = 0.0, corrupt_seed: int = 0,
        selection: dict | None = None, progress_every_s: float = 10.0,
        log: Callable[[str], None] | None = None, holdout: HoldoutSplit | None = None) -> dict:
    """Generate (unless `generator` is None: finalize only), finalize, write output and summary.

    `holdout` is the validation split training will apply to `output`: error injection then
    leaves its held-out pairs alone (cpt.synth.corrupt).

    `generator` may be a factory, called only when the journal lacks some work: a rerun of a
    finished run then loads no model at all.
    """
    output = Path(output)
    start = time.monotonic()
    _check_unique(tasks)
    summary_path(output).unlink(missing_ok=True)  # the summary marks a complete output: not yet
    with Journal(journal_path(output)) as journal:
        check_prompts(tasks, journal)
        resumed = sum(t.key in journal for t in tasks)
        prog = None
        if generator is not None and resumed < len(tasks):
            if not hasattr(generator, "generate"):
                generator = generator()
            prog = generate(tasks, generator, journal, params, filter_config, progress_every_s, log=log)
        elif generator is not None and not hasattr(generator, "generate"):
            generator = None
        records, counts = finalize(tasks, journal, filter_config, corrupt_rate, corrupt_seed, holdout)
        counts["rejected"]["generation_failed"] = prog.failed if prog else 0
        torn = journal.torn_tail_bytes
    write_jsonl_atomic(output, records)
    elapsed = time.monotonic() - start
    summary = {
        "version": SUMMARY_VERSION, "output": str(output), "journal": str(journal_path(output)),
        "tasks": len(tasks), "resumed_from_journal": resumed,
        "generated_now": prog.generated if prog else 0,
        "generation_failed": prog.failed if prog else 0,
        "missing": len(tasks) - counts["generations_journaled"],
        "tokens_generated_now": prog.tokens if prog else 0,
        "generator": getattr(generator, "name", None),
        "retries": getattr(generator, "retries", 0),
        "journal_torn_tail_bytes": torn,
        "sampling": {"max_new_tokens": params.max_new_tokens, "temperature": params.temperature,
                     "top_p": params.top_p},
        "selection_skipped": dict(sorted((selection or {}).items())),
        "seconds": round(elapsed, 3),
        "pairs_per_s": round(counts["pairs_kept"] / elapsed, 4) if elapsed else 0.0,
        **counts,
    }
    write_json_atomic(summary_path(output), summary, sort_keys=True)
    return summary
