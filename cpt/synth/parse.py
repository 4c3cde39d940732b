"""Extracting question-answer pairs from generated text.

Science prompts ask for blocks of `Question: ...` / `Answer: ...`. Small models drift (numbering,
bold markers, `Q:`/`A:`, a marker repeated with nothing between, as a model continuing a prefilled
`Question:` often does), so the markers are matched loosely, but the structure is strict: every
question needs an answer and text outside the blocks is ignored. A generation with no complete pair
is malformed as a whole; each question without an answer is one malformed pair.
Code prompts ask for an explained solution; the question is the problem itself.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# "Question:", "Question 2:", "**Question 1:**", "Q:", "Q1.", "1. Question:" ...
_MARK = (r"^[ \t>*#\-]*(?:\d+[.)]\s*)?\**\s*"
         r"(?:(?P<kind>question|answer)\s*\d*\s*\**\s*[:：.]|(?P<short>[qa])(?:\s*\d+\s*[:：.]|\s*[:：]))"
         r"\**[ \t]*")
_MARK_RE = re.compile(_MARK, re.IGNORECASE | re.MULTILINE)
_REPEATED_Q_RE = re.compile(r"^(?:\**question\s*\d*\s*\**\s*[:：]\**\s*)+", re.IGNORECASE)
"""The marker again at the start of a question ("Question: Question: ..."): a prefilled marker repeated."""
_CODE_RE = re.compile(r"```|^\s*(?:def|class)\s+\w+", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class ParsedPair:
    """One extracted pair; `malformed` pairs (a question without answer) are kept for counting."""

    question: str
    answer: str
    malformed: bool = False


def parse_qa(text: str) -> list[ParsedPair]:
    """Pairs in `text` in order; an empty list means nothing pair-like was found (malformed)."""
    marks = [((m.group("kind") or m.group("short")).lower()[0], m.start(), m.end())
             for m in _MARK_RE.finditer(text)]
    pairs: list[ParsedPair] = []
    i = 0
    while i < len(marks):
        kind, _, body_start = marks[i]
        body_end = marks[i + 1][1] if i + 1 < len(marks) else len(text)
        if kind != "q":
            i += 1  # an answer with no question before it carries nothing usable
            continue
        if i + 1 < len(marks) and marks[i + 1][0] == "q" and not text[body_start:body_end].strip():
            i += 1  # a repeated question marker ("Question:\nQuestion: ...") opens one question
            continue
        question = _REPEATED_Q_RE.sub("", _clean(text[body_start:body_end]))
        if i + 1 < len(marks) and marks[i + 1][0] == "a":
            i += 1
            # a repeated answer marker ("Answer:\n\nAnswer: ...") opens one answer: the text after the last
            while i + 1 < len(marks) and marks[i + 1][0] == "a" and not text[marks[i][2]:marks[i + 1][1]].strip():
                i += 1
            a_end = marks[i + 1][1] if i + 1 < len(marks) else len(text)
            pairs.append(ParsedPair(question, _clean(text[marks[i][2]:a_end])))
            i += 1
        else:
            pairs.append(ParsedPair(question, "", malformed=True))
            i += 1
    return pairs


def parse_code_answer(text: str, require_code: bool = True) -> ParsedPair | None:
    """The explained solution, or None when it is malformed (no code where code is required)."""
    answer = re.sub(r"^\s*(?:solution|answer)\s*[:：]\s*", "", text.strip(), flags=re.IGNORECASE)
    if require_code and not _CODE_RE.search(answer):
        return None
    return ParsedPair("", answer)


def _clean(s: str) -> str:
    """Strip markup remnants and collapse blank runs, keeping line breaks inside the body."""
    lines = [ln.rstrip() for ln in s.strip().strip("*").strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
