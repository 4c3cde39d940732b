"""Evaluating models: lm-evaluation-harness on an HF folder, per-stream held-out perplexity.

  cpt.eval.harness   bridge to lm-eval (optional dependency `cpt[eval]`), offline, local tasks
  cpt.eval.tasks     built-in offline tasks (`cpt_next_sentence_en` / `_zh`) built from installed text
  cpt.eval.heldout   the held-out documents of each recipe stream (training's split rule)
  cpt.eval.ppl       per-stream perplexity (token-weighted and per-document) and before/after tables

Nothing here imports megatron; `cpt eval` (cpt.commands.eval) exports megatron checkpoints first.
"""
