"""cpt: continual pre-training of LLMs on megatron-core.

`cpt` holds the logic that does not need megatron (data tools, samplers, mixture controllers, the
training loop against a small engine interface); `megatron_ext` implements that interface with
megatron-core. Only `cpt.cli` wires the two together.
"""

__version__ = "0.1.0"
