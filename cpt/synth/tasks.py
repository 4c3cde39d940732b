"""The work list: one task per (snippet or problem, prompt version, sample index).

Building it is deterministic (input order, fixed discipline filters, seeded example choice), so a
resumed or re-sharded run computes the same keys and finds its finished work in the journal.
Snippets that get no discipline are not guessed at; they are skipped and counted by reason.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from itertools import islice
from typing import Callable, Iterable, Sequence

from cpt.synth.classify import DisciplineFilter, KeywordFilter, from_tagged_topic
from cpt.synth.code_tasks import Problem, SeedPair, pick_examples
from cpt.synth.disciplines import Discipline, get as get_discipline
from cpt.synth.prompts import PromptTemplate
from cpt.synth.snippets import Snippet

DISCIPLINE_MODES = ("auto", "topic", "keywords", "embedding")


@dataclass(frozen=True, slots=True)
class Task:
    """One prompt to generate and everything its records need."""

    key: str
    """`snippet_id|prompt_version|sample_index`: the record key."""
    kind: str
    """`science` or `code`."""
    snippet_id: str
    doc_id: str
    discipline: str
    prompt: PromptTemplate
    sample_index: int
    messages: list
    context: str
    """The snippet (science; answers are checked against it) or the problem (code; the question)."""

    @property
    def seed(self) -> int:
        """Sampling seed derived from the key."""
        return int.from_bytes(hashlib.sha256(self.key.encode()).digest()[:4], "little")


def task_key(snippet_id: str, prompt_tag: str, sample_index: int) -> str:
    return f"{snippet_id}|{prompt_tag}|{sample_index}"


def in_shard(key: str, shard_index: int, num_shards: int) -> bool:
    """Deterministic split of the work by key hash (for --shard-index/--num-shards)."""
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"--shard-index {shard_index} must be in [0, --num-shards {num_shards})")
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") % num_shards == shard_index


def assign_disciplines(snippets: Sequence[Snippet], mode: str, skipped: Counter,
                       fallback: DisciplineFilter | None = None,
                       forced: str | None = None) -> list[Discipline | None]:
    """The discipline of each snippet (None = skipped, with the reason counted in `skipped`).

    `forced` puts every snippet in one discipline. Otherwise `topic` uses the tagger's label only,
    `keywords`/`embedding` use the `fallback` filter only, and `auto` uses the label when the
    document has one and the fallback (keywords by default) when it has not.
    """
    if mode not in DISCIPLINE_MODES:
        raise ValueError(f"unknown discipline mode {mode!r}; choose from {', '.join(DISCIPLINE_MODES)}")
    if forced is not None:
        d = get_discipline(forced)
        return [d] * len(snippets)
    fallback = fallback or KeywordFilter()
    out: list[Discipline | None] = [None] * len(snippets)
    need_fallback: list[int] = []
    for i, s in enumerate(snippets):
        if mode in ("topic", "auto") and s.topic:
            out[i] = from_tagged_topic(s.topic, s.text)
            if out[i] is None:
                skipped["topic_without_discipline"] += 1
        elif mode == "topic":
            skipped["no_topic"] += 1
        else:
            need_fallback.append(i)
    if need_fallback:
        for i, d in zip(need_fallback, fallback.classify([snippets[i].text for i in need_fallback])):
            out[i] = d
            if d is None:
                skipped["no_discipline_match"] += 1
    return out


def select_snippets(snippets: Iterable[Snippet], assign: Callable[[list[Snippet]], list[Discipline | None]],
                    limit: int | None, per_discipline: int | None, skipped: Counter,
                    block: int = 256) -> tuple[list[Snippet], list[Discipline | None]]:
    """Snippets in input order with their disciplines (`assign` of a list, e.g. `assign_disciplines`).

    Without `per_discipline`, the first `limit` snippets, as they come. With it, at most
    `per_discipline` snippets of each discipline and `limit` in all, read until those are found or
    the input ends: a corpus that starts with one subject still yields QA of every discipline it
    holds. The snippets left out for a full discipline are counted as `discipline_full`.
    """
    it = iter(snippets)
    if per_discipline is None:
        chosen = list(islice(it, limit))
        return chosen, assign(chosen)
    kept: list[Snippet] = []
    found: list[Discipline | None] = []
    counts: Counter = Counter()
    while limit is None or len(kept) < limit:
        chunk = list(islice(it, block))
        if not chunk:
            break
        for snip, disc in zip(chunk, assign(chunk)):
            if disc is None or (limit is not None and len(kept) >= limit):
                continue
            if counts[disc.name] >= per_discipline:
                skipped["discipline_full"] += 1
                continue
            counts[disc.name] += 1
            kept.append(snip)
            found.append(disc)
    return kept, found


def science_tasks(snippets: Iterable[Snippet], disciplines: Sequence[Discipline | None],
                  templates: dict[str, PromptTemplate], samples: int = 1, n_pairs: int = 3,
                  only: set[str] | None = None, skipped: Counter | None = None) -> list[Task]:
    """Tasks for snippets with a discipline; `only` restricts to those disciplines."""
    skipped = skipped if skipped is not None else Counter()
    tasks = []
    for snip, disc in zip(snippets, disciplines):
        if disc is None:
            continue
        if only is not None and disc.name not in only:
            skipped["discipline_not_selected"] += 1
            continue
        tpl = templates[disc.name]
        messages = tpl.render(snippet=snip.text, n_pairs=str(n_pairs), discipline=disc.name.replace("_", " "))
        for s in range(samples):
            tasks.append(Task(task_key(snip.snippet_id, tpl.tag, s), "science", snip.snippet_id, snip.doc_id,
                              disc.name, tpl, s, messages, snip.text))
    return tasks


def code_messages(problem: Problem, template: PromptTemplate, examples: Sequence[SeedPair]) -> list[dict]:
    """System turn, then each example as a user/assistant exchange, then the problem."""
    messages = [{"role": "system", "content": template.system}]
    for ex in examples:
        messages.append({"role": "user", "content": template.fill(problem=ex.problem)})
        messages.append({"role": "assistant", "content": ex.solution})
    messages.append({"role": "user", "content": template.fill(problem=problem.text)})
    return messages


def code_tasks(problems: Iterable[Problem], template: PromptTemplate, seeds: list[SeedPair], k: int = 2,
               samples: int = 1, seed: int = 0) -> list[Task]:
    """Tasks for programming problems, k in-context examples each."""
    tasks = []
    for p in problems:
        messages = code_messages(p, template, pick_examples(p, seeds, k, seed))
        for s in range(samples):
            tasks.append(Task(task_key(p.problem_id, template.tag, s), "code", p.problem_id, p.problem_id,
                              "code", template, s, messages, p.text))
    return tasks
