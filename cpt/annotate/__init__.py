"""Document annotators: topic tags and perplexity, written into the shards' metadata sidecar.

  taxonomy.yaml / taxonomy.py  the topics (11 en over MMLU, 11 zh over CMMLU) - data, replaceable
  classifier.py                encoder + mean pooling + linear head: train, save, load, predict
  bootstrap.py                 labels without labels: embedding similarity, or an LLM generator
  fit.py                       `cpt tag-train`: labels -> classifier -> held-out report
  tagging.py                   the annotator filling topic / topic_conf
  perplexity.py                windows, length bucketing, the `Scorer` interface, the HF scorer
  vllm_backend.py              `Scorer` over vLLM prompt_logprobs (imported only when chosen)
  docs.py / inputs.py          documents from raw jsonl; the tag/score command inputs
  runner.py / store.py         blocks, worker processes, checkpoints, atomic final writes
  scaleout.py                  --shard-index/--num-shards slices, part files, --merge
  pipeline.py                  raw corpus -> table, shard -> sidecar; summaries
  metrics.py, encoder.py, modelfiles.py
"""
