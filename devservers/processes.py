"""Servers started as subprocesses by tests and benchmarks: run one until it answers, stop it and its children."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def answers(url: str) -> bool:
    """Whether GET `url` answers 200."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def stop(proc: subprocess.Popen) -> None:
    """Stop a process and its group: SIGTERM, then SIGKILL if it is still there after 30 s."""
    for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(grace)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def running(name: str, args: list[str], env: dict[str, str], health_url: str, workdir: Path) -> Iterator[Path]:
    """Run a server in `workdir` until `health_url` answers; on exit stop it and print its log (yields the log)."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{name}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(args, env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            while proc.poll() is None and not answers(health_url) and time.monotonic() < deadline:
                time.sleep(0.3)
            assert proc.poll() is None, f"{name} exited with {proc.returncode}"
            assert answers(health_url), f"{name} did not answer {health_url} in 180 s"
            yield log
        finally:
            stop(proc)
            # pytest shows what a test printed only when it fails: these logs make a red CI readable
            print(f"\n----- {name}: last lines of {log} -----\n{log.read_text()[-4000:]}")
