"""A real Label Studio for tests and benchmarks: its own venv, a copy of a pre-migrated data dir, a free port."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx

from devservers.ports import free_port

REPO = Path(__file__).resolve().parents[1]
# The same values .ci/labelstudio.sh presets when it builds the template data dir.
USERNAME = "reviewer@intelrouter.test"
PASSWORD = "intelrouter-review"
TOKEN = "1ab5e7d9c3f24b6a8e0d2c4f6a8b0c2e4d6f8a0b"
OFFLINE_ENV = {
    "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
    "COLLECT_ANALYTICS": "false",
    "SENTRY_DSN": "",
    "FRONTEND_SENTRY_DSN": "",
}
READY_MARK = ".intelrouter-ready"
_BOUND = re.compile(rb"Starting development server at http://[\d.]+:(\d+)/")


class LabelStudioMissing(RuntimeError):
    """The Label Studio venv is not installed."""


def venv() -> Path:
    """The Label Studio venv: $LABEL_STUDIO_VENV, default <repo>/.venv-labelstudio."""
    return Path(os.environ.get("LABEL_STUDIO_VENV") or REPO / ".venv-labelstudio")


def binary() -> Path:
    """The label-studio executable inside that venv."""
    return venv() / "bin" / "label-studio"


def template_dir() -> Path:
    """The pre-migrated data dir: $LABEL_STUDIO_TEMPLATE_DIR, default <repo>/.labelstudio-template."""
    return Path(os.environ.get("LABEL_STUDIO_TEMPLATE_DIR") or REPO / ".labelstudio-template")


def ensure_template() -> Path:
    """The template data dir, built once with .ci/labelstudio.sh when missing (the venv must exist)."""
    if not binary().exists():
        raise LabelStudioMissing(
            f"Label Studio is not installed at {binary()}: run `bash .ci/labelstudio.sh` "
            "(or point LABEL_STUDIO_VENV at a venv with label-studio==1.23.2)"
        )
    template = template_dir()
    if not (template / READY_MARK).exists():
        env = {**os.environ, "LABEL_STUDIO_VENV": str(venv()), "LABEL_STUDIO_TEMPLATE_DIR": str(template)}
        subprocess.run(["bash", str(REPO / ".ci" / "labelstudio.sh")], check=True, env=env, timeout=600)
    return template


class LabelStudioServer:
    """`label-studio start` on a data dir; start, stop (SIGTERM), kill (SIGKILL) and start again."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def from_template(cls, root: Path) -> LabelStudioServer:
        """A server on a fresh copy of the template data dir under `root`."""
        data = root / "labelstudio-data"
        shutil.copytree(ensure_template(), data)
        return cls(data)

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, port: int | None = None, timeout: float = 180.0) -> None:
        """Start and wait until healthy; a busy port (Label Studio silently moves on) is detected and handled."""
        last = ""
        for _ in range(3):
            wanted = port or free_port()
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            env = {**os.environ, **OFFLINE_ENV, "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir)}
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    [str(binary()), "start", "--no-browser", "--internal-host", "127.0.0.1",
                     "--port", str(wanted), "--data-dir", str(self.data_dir)],
                    env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.data_dir,
                )
            bound = self._wait_bound(offset, timeout)
            if bound is not None and self._wait_healthy(bound, timeout):
                self.port = bound
                return
            last = self._log_tail(offset)
            self._terminate(signal.SIGKILL)
            port = None  # the port was taken between the check and the bind: try another
        raise RuntimeError(f"Label Studio did not start; last log lines:\n{last}")

    def _log_tail(self, offset: int) -> str:
        with self.log_path.open("rb") as fh:
            fh.seek(offset)
            return b"\n".join(fh.read().splitlines()[-15:]).decode(errors="replace")

    def _wait_bound(self, offset: int, timeout: float) -> int | None:
        """The port from the server's own start line (it differs from the one asked for when that was busy)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc is not None and self.proc.poll() is None:
            with self.log_path.open("rb") as fh:
                fh.seek(offset)
                found = _BOUND.search(fh.read())
            if found:
                return int(found.group(1))
            time.sleep(0.2)
        return None

    def _wait_healthy(self, port: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc is not None and self.proc.poll() is None:
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/api/current-user/whoami",
                                 headers={"Authorization": f"Token {TOKEN}"}, timeout=5)
                # our server, not another one on a port it moved to: it knows our user
                if resp.status_code == 200 and resp.json().get("email") == USERNAME:
                    return self.proc.poll() is None
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        return False

    def _terminate(self, sig: int, wait: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(wait)

    def stop(self) -> None:
        """Stop gracefully (SIGTERM)."""
        self._terminate(signal.SIGTERM)

    def kill(self) -> None:
        """Kill at once (SIGKILL), as a crash would."""
        self._terminate(signal.SIGKILL)

    def restart(self) -> None:
        """Start again on the same data dir, on the same port when it is still free."""
        self.start(port=self.port)
