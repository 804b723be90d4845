"""``--executor temporal`` options, checked without importing temporalio."""

from __future__ import annotations

import os
import socket
from typing import Any

from pliny.errors import UsageError

DEFAULT_ADDRESS = "127.0.0.1:7233"
DEFAULT_QUEUE = "pliny"
KNOWN = {"address", "task_queue", "heartbeat_s", "max_attempts"}


def address_of(address: str | None) -> str:
    return address or os.environ.get("PLINY_TEMPORAL_ADDRESS") or DEFAULT_ADDRESS


def queue_of(queue: str | None) -> str:
    return queue or os.environ.get("PLINY_TEMPORAL_TASK_QUEUE") or DEFAULT_QUEUE


def check(options: dict[str, Any]) -> None:
    unknown = set(options) - KNOWN
    if unknown:
        raise UsageError(f"unknown temporal executor option(s): {', '.join(sorted(unknown))}")
    check_reachable(address_of(options.get("address")))


def check_reachable(address: str, what: str = "Temporal", timeout: float = 3.0) -> None:
    """A TCP connect before anything is written: a wrong address is bad input."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--temporal {address!r}: expected HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UsageError(
            f"cannot reach {what} at {address}: {exc.strerror or exc}",
            code="PLINY-TEMPORAL-UNREACHABLE",
            hint="start it (`temporal server start-dev`) or pass --temporal HOST:PORT",
        ) from None


async def connect(address: str) -> Any:
    from temporalio.client import Client

    try:
        namespace = os.environ.get("PLINY_TEMPORAL_NAMESPACE", "default")
        return await Client.connect(address, namespace=namespace)
    except Exception as exc:  # noqa: BLE001 - the SDK raises RuntimeError for every kind
        raise UsageError(
            f"cannot reach Temporal at {address}: {str(exc).splitlines()[0]}",
            code="PLINY-TEMPORAL-UNREACHABLE",
            hint="start one (`temporal server start-dev`) or pass --temporal HOST:PORT",
        ) from None
