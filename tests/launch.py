"""Launching test workers in their own processes: plain python or torchrun on CPU.

Importing megatron costs ~9 s per process, so tests batch many cases into few launches. Each launch
runs in its own process group, so a hang kills torchrun's workers too, and a failure shows the
tail of the workers' output.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int) -> list[str]:
    """The torchrun command for `nproc` local processes on a free port
    (--master_port=0 hangs in the static rendezvous)."""
    exe = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    return [exe, f"--nproc_per_node={nproc}", f"--master_port={free_port()}"]


def launch(cmd: list[str], timeout: int = 900) -> None:
    """Run `cmd` from the repository root; raise AssertionError with its output if it fails."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"{' '.join(cmd[:4])} did not finish in {timeout} s") from None
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd[:4])} failed ({proc.returncode}):\n{out[-3000:]}\n{err[-6000:]}")
