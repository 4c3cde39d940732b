"""megatron-core behind the small engine interface of `cpt.train.engine`.

This package is the only place that imports `megatron.core`; version differences between the
megatron-core releases we support stay here.
"""
