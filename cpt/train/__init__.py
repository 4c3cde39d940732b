"""The training loop, the WSD schedule, and the small engine interface the loop drives.

Nothing here imports megatron: `megatron_ext.engine` implements `cpt.train.engine.Engine`.
"""
