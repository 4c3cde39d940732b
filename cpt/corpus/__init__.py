"""Reading raw documents: input discovery, deterministic work plans, validated records, language tags."""
from cpt.corpus.files import InputFile, list_inputs
from cpt.corpus.lang import detect_lang, normalize_lang
from cpt.corpus.plan import Chunk, Segment, make_plan, shard_slice
from cpt.corpus.records import CorpusError, Record, iter_records

__all__ = [
    "InputFile", "list_inputs", "detect_lang", "normalize_lang", "Chunk", "Segment", "make_plan",
    "shard_slice", "CorpusError", "Record", "iter_records",
]
