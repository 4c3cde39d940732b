"""A quick language/kind tag per document: zh, en, code, synthetic or other.

Taken from the input's own field when it has one (normalised), else detected from the first 300
characters: share of CJK characters for zh, symbol density and line shapes for code, share of Latin
letters for en (so "en" means Latin-script prose here, not a language identification). It runs on
every document, so it classifies bytes with one `bytes.translate` and counts classes in C.
"""
from __future__ import annotations

import re
import string

_SAMPLE = 300


def _class_table() -> bytes:
    table = bytearray(b"." * 256)
    # UTF-8 lead bytes of U+3000..U+9FFF (CJK punctuation, kana, ideographs) and U+F000..U+FFFF.
    for b in list(range(0xE3, 0xEA)) + [0xEF]:
        table[b] = ord("z")
    for b in b"{}()[];=<>":
        table[b] = ord("s")
    for b in string.ascii_letters.encode():
        table[b] = ord("l")
    for b in b" \t\r\n":
        table[b] = ord("w")
    return bytes(table)


_TABLE = _class_table()
_CODE_LINE = re.compile(
    r"^\s*(def |class |import |from \S+ import |#include|function\b|public |private |return\b|"
    r"for \(|if \(|while \(|[{}]\s*$|//|/\*|\*/|@\w+|let |const |var |fn |package |using )",
    re.M,
)
_ALIASES = {
    "zh": "zh", "chinese": "zh", "cn": "zh", "zho": "zh", "chi": "zh",
    "en": "en", "english": "en", "eng": "en",
    "code": "code", "python": "code", "java": "code", "c": "code", "cpp": "code", "c++": "code",
    "javascript": "code", "js": "code", "typescript": "code", "go": "code", "rust": "code", "sql": "code",
    # QA written by `cpt synth` keeps its own stream (stage 2 blends ZH:EN:synthetic = 1:7:2)
    "synthetic": "synthetic",
}


def normalize_lang(value: str) -> str:
    """Map an input's language label (zh-CN, English, python, synthetic, ...) to zh / en / code /
    synthetic / other."""
    v = value.strip().lower()
    if v in _ALIASES:
        return _ALIASES[v]
    for sep in ("-", "_"):
        head = v.split(sep, 1)[0]
        if head in ("zh", "en"):
            return head
    return "other"


def detect_lang(text: str) -> str:
    sample = text[:_SAMPLE]
    classes = sample.encode("utf-8", "surrogatepass").translate(_TABLE)
    # a CJK character is 3 UTF-8 bytes with one lead byte; count characters, not bytes
    cjk = classes.count(b"z")
    chars = len(sample) - classes.count(b"w")
    if chars <= 0:
        return "other"
    if cjk > 0.2 * chars:
        return "zh"
    symbols = classes.count(b"s")
    if symbols > 0.08 * chars:
        return "code"
    lines = sample.count("\n") + 1
    if lines >= 3 and symbols > 0.02 * chars and len(_CODE_LINE.findall(sample)) > 0.3 * lines:
        return "code"
    if classes.count(b"l") > 0.5 * chars:
        return "en"
    return "other"
