"""Sampling: streams of documents in curriculum orders, packing, and deterministic dynamic blending.

The C++ kernels in csrc/ (module `cpt._C`) do the per-sample work; every kernel has a NumPy
reference here with identical output. See DESIGN.md, "Streams and orders" and "Blender".

  DocumentTable   lengths + metadata of documents (from arrays, or from cpt shards)
  Stream          filtered documents in an order (shuffle / ppl_asc / ppl_desc), packed into samples
  Blender         weights over streams -> global (stream, index) sequence; weight history = state
  DataParallelLayout   each rank's slice of every global batch
"""
from cpt.sampling.blender import Blender, SampleIds, WeightChange
from cpt.sampling.blending import blend_segment, blend_segment_reference
from cpt.sampling.documents import DocumentTable
from cpt.sampling.errors import StreamExhausted
from cpt.sampling.filters import FilterError
from cpt.sampling.packing import pack_segment, pack_segment_reference
from cpt.sampling.parallel import DataParallelLayout
from cpt.sampling.reading import read_samples
from cpt.sampling.stream import DocPiece, Pieces, Stream, StreamConfig

__all__ = [
    "Blender", "SampleIds", "WeightChange", "StreamExhausted", "FilterError",
    "blend_segment", "blend_segment_reference", "pack_segment", "pack_segment_reference",
    "DocumentTable", "Stream", "StreamConfig", "DocPiece", "Pieces", "DataParallelLayout", "read_samples",
]
