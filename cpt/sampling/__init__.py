"""Sampling: streams of documents in curriculum orders, packing, and deterministic dynamic blending.

The C++ kernels in csrc/ (module `cpt._C`) do the per-sample work; every kernel has a NumPy
reference here with identical output. See DESIGN.md, "Streams and orders" and "Blender".
"""
from cpt.sampling.blender import Blender, SampleIds, StreamExhausted, WeightChange
from cpt.sampling.blending import blend_segment, blend_segment_reference
from cpt.sampling.packing import pack_segment, pack_segment_reference

__all__ = [
    "Blender", "SampleIds", "StreamExhausted", "WeightChange",
    "blend_segment", "blend_segment_reference", "pack_segment", "pack_segment_reference",
]
