"""Turn a parsed command line back into argv, so a task is the command a user could type.

A slice of `cpt tag` is `cpt tag ... --shard-index i --num-shards n`, and a sweep arm is `cpt train
recipe.yaml key=value`: tasks that are argv lists are pure, JSON-able, readable in the summary and
rerunnable by hand from a log. Only values that differ from the parser's defaults are written.
"""
from __future__ import annotations

import argparse
from typing import Any, Iterable


def _strings(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def argv_of(parser: argparse.ArgumentParser, args: argparse.Namespace, drop: Iterable[str] = ()) -> list[str]:
    """argv that `parser` parses back into `args` (less the entries named in `drop`)."""
    drop = set(drop)
    options: list[str] = []
    positionals: list[str] = []
    for action in parser._actions:  # argparse keeps no public list of its actions
        if action.dest in drop or action.dest == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        if not hasattr(args, action.dest):
            continue
        value = getattr(args, action.dest)
        if not action.option_strings:
            positionals += _strings(value)
            continue
        if value == action.default:
            continue
        flag = action.option_strings[-1] if not isinstance(action, argparse.BooleanOptionalAction) \
            else action.option_strings[0]
        if isinstance(action, argparse.BooleanOptionalAction):
            options.append(flag if value else "--no-" + flag[2:])
        elif isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            options.append(flag)
        elif isinstance(action, argparse._AppendAction):
            for v in value:
                options += [flag, str(v)]
        elif value is not None:
            options += [flag, *_strings(value)]
    return options + (["--", *positionals] if positionals else [])


__all__ = ["argv_of"]
