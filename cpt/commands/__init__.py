"""One module per `cpt` sub-command: `add_arguments(parser)` and `run(args) -> int`.

Command modules import heavy dependencies (torch, megatron) inside `run`, never at module level,
so building the CLI parser stays cheap.
"""
