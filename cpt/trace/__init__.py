"""Every sample accountable: which documents trained a step, and which steps trained a document.

Nothing is logged per step. A stage's latest checkpoint holds its recipe, where the stage starts
(step, consumed samples) and the Blender's weight history; rebuilding the stage's streams from the
recipe and replaying the history gives the (stream, index within stream) of any global sample,
and the stream gives its token ranges of shard documents, whose metadata names them. That replay
is the same code the trainer fetches through, so the answer is exact for every step up to the
checkpoint, whatever DP/TP/PP layout ran it and however often the stage was resumed.

  trace_step(stages, step, dp_rank=None)   -> the samples of one step (one DP rank's, or all)
  trace_doc(stages, doc_id)                -> every (stage, step, sample) that read a document
"""
from cpt.trace.stages import Stage, TraceError, open_stages
from cpt.trace.trace import SampleTrace, trace_doc, trace_step

__all__ = ["SampleTrace", "Stage", "TraceError", "open_stages", "trace_doc", "trace_step"]
