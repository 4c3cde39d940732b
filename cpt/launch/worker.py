"""`python -m cpt.launch.worker SPEC.json`: one attempt of a task in a fresh process (local executor).

Writes run_task's dict to SPEC.result.json (atomically) on success; on failure the traceback is in
the attempt's log and the last line goes to stderr, which the driver reads.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from cpt.io import write_json_atomic
    from cpt.launch.task import run_task

    spec_file = Path((argv or sys.argv[1:])[0])
    spec = json.loads(spec_file.read_text())
    try:
        outcome = run_task(spec["task"], spec["launch_dir"], spec["attempt"])
    except Exception as e:  # noqa: BLE001 - any failure of the task is reported, then retried
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    write_json_atomic(spec_file.with_name(spec_file.name[: -len(".json")] + ".result.json"), outcome)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
