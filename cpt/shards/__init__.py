"""Token shards: Megatron's `.bin/.idx` plus a metadata sidecar and a manifest.

Public surface:
  open(prefix, expect_tokenizer=None)     -> Shard (validated; memory-mapped tokens, doc_lengths,
                                             metadata() as a pyarrow table)
  update_metadata(prefix, {name: values}) -> add annotation columns with an atomic rewrite
  document_text(shard, i)                 -> the source text of document i, re-read from the input
  document_texts(shard, start, stop)      -> the same for a range, streaming (for annotators)
  merge(prefixes, output_prefix)          -> concatenate shards (tokens, index, metadata, skipped log)
"""
from cpt.shards.format import ShardError, optimal_dtype
from cpt.shards.metadata import doc_id, read_metadata, update_metadata
from cpt.shards.merge import merge_shards
from cpt.shards.reader import Shard, open_shard

open = open_shard  # noqa: A001 - `cpt.shards.open(prefix)` is the documented entry point
# Assigned after the submodule import above, so the function (not the module) is `cpt.shards.merge`.
merge = merge_shards


def document_text(shard, i):
    """The raw text of document i, re-read from its source (see cpt.shards.source_text)."""
    from cpt.shards.source_text import document_text as _document_text

    return _document_text(shard, i)


def document_texts(shard, start=0, stop=None):
    """The raw texts of documents start..stop-1 in order, each source file opened once."""
    from cpt.shards.source_text import document_texts as _document_texts

    return _document_texts(shard, start, stop)


__all__ = [
    "Shard", "ShardError", "open", "open_shard", "optimal_dtype", "doc_id", "read_metadata",
    "update_metadata", "merge", "merge_shards", "document_text", "document_texts",
]
