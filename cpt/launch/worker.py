"""`python -m cpt.launch.worker SPEC.json`: one attempt of a task in a fresh process (local executor).

Writes run_task's dict to SPEC.result.json (atomically) on success; on failure the traceback is in
the attempt's log and the last line goes to stderr, which the driver reads.

`python -m cpt.launch.worker --warm WARM.json`: a process started before its attempt is known.
It runs the warm-up task of WARM.json (loading what the tasks share while the driver still plans
them; its outcome goes to WARM.result.json, a failure only to stderr), then reads the path of its
attempt's SPEC.json from stdin and runs that one attempt as above; end of input: exit unused.

The process ends without the interpreter's teardown (`os._exit` once its outcome is written).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def run_spec(spec_file: Path, quiet: bool = False) -> int:
    """Run the attempt (or warm-up) of `spec_file`; 0 and SPEC.result.json on success.

    `quiet`: a failure is not this process's result (a warm-up's), so its line says what it was."""
    from cpt.io import write_json_atomic
    from cpt.launch.task import run_task

    spec = json.loads(spec_file.read_text())
    try:
        outcome = run_task(spec["task"], spec["launch_dir"], spec["attempt"])
    except Exception as e:  # noqa: BLE001 - any failure of the task is reported, then retried
        print(f"{'warm-up failed: ' if quiet else ''}{type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 1
    write_json_atomic(result_file(spec_file), outcome)
    return 0


def result_file(spec_file: Path) -> Path:
    """Where the outcome of the attempt of `spec_file` goes (SPEC.result.json)."""
    return spec_file.with_name(spec_file.name[: -len(".json")] + ".result.json")


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if args[0] != "--warm":
        return run_spec(Path(args[0]))
    run_spec(Path(args[1]), quiet=True)
    line = sys.stdin.readline().strip()
    return run_spec(Path(line)) if line else 0


if __name__ == "__main__":
    code = main()
    # The outcome is on disk (atomically) and the task committed its outputs before it returned; the
    # driver takes this process's end for the attempt's end. What the interpreter's teardown would
    # still do (free a loaded model, unload torch and transformers, join their idle threads) only
    # delays it: seconds with a model loaded, on the critical path of every local launch.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
