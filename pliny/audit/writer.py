"""The crash-safe, hash-chained JSONL audit log: writer, tail repair, verify.

Line format: one compact JSON object per line, the event's fields plus

- ``seq``  1, 2, 3 ... consecutive over the whole file (continued on reopen);
- ``prev`` sha256 hex of the previous line's bytes (without its newline),
  64 zeros on the first line;
- ``hash`` always the last key: sha256 hex of the line's own bytes with the
  ``,"hash":"..."`` suffix removed, so an edit of the final line is caught too.

``prev`` and ``hash`` are therefore reserved field names. The chain has no
secret key: it detects accidents and naive edits (a removed, reordered,
inserted or edited line), not a forger who recomputes every hash. Removing
whole lines from the *end* looks exactly like a crash before they were
written and cannot be detected from the file alone.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pliny.atomicfile import PRIVATE_FILE, fsync_dir, private_dir
from pliny.errors import AuditFailure
from pliny.events import TRANSIENT, Event, LogRepaired
from pliny.redact import Redactor

GENESIS = "0" * 64
FsyncPolicy = Literal["every_event", "group", "none"]
_HASH_PREFIX = b',"hash":"'
_SUFFIX_LEN = len(_HASH_PREFIX) + 64 + 2  # ,"hash":"<64 hex>"}
_TAIL_WINDOW = 64 * 1024
_SEQ = {"seq"}  # spliced in by the writer


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def seal(body: bytes) -> bytes:
    """A JSON object's bytes (holding ``seq`` and ``prev``) -> the line, with its ``hash``."""
    return body[:-1] + _HASH_PREFIX + sha256_hex(body).encode() + b'"}\n'


def encode_line(data: dict[str, Any]) -> bytes:
    """Serialize one record (already holding ``seq`` and ``prev``) as a sealed line."""
    return seal(json.dumps(data, separators=(",", ":")).encode())


def check_line_hash(raw: bytes) -> bool:
    """True when ``raw`` (no newline) ends with a ``hash`` matching the rest of the line."""
    if len(raw) < _SUFFIX_LEN + 2 or not raw.endswith(b'"}'):
        return False
    if raw[-_SUFFIX_LEN : -_SUFFIX_LEN + len(_HASH_PREFIX)] != _HASH_PREFIX:
        return False
    body = raw[:-_SUFFIX_LEN] + b"}"
    return sha256_hex(body).encode() == raw[-66:-2]


def _record(raw: bytes) -> dict[str, Any] | None:
    """The JSON object of a complete line with an integer seq, else None."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or type(data.get("seq")) is not int:
        return None
    return data


@dataclass
class _Tail:
    good_end: int  # byte offset just after the last valid line
    last_line: bytes | None  # that line, without its newline
    last_seq: int


def _scan_tail(fd: int, size: int) -> _Tail:
    """Find the last valid complete line, reading backwards in growing windows."""
    window = _TAIL_WINDOW
    while True:
        start = max(0, size - window)
        buf = os.pread(fd, size - start, start)
        cut = buf.rfind(b"\n")
        while cut >= 0:
            begin = buf.rfind(b"\n", 0, cut) + 1
            if begin == 0 and start > 0:
                break  # this line may start before the window: read more
            raw = buf[begin:cut]
            record = _record(raw)
            if record is not None:
                return _Tail(start + cut + 1, raw, record["seq"])
            cut = begin - 1
        if start == 0:
            return _Tail(0, None, 0)
        window *= 4


def _side_file(path: Path) -> Path:
    n = 1
    while (side := path.with_name(f"{path.name}.torn-{n}")).exists():
        n += 1
    return side


def _sync(fd: int) -> None:
    (getattr(os, "fdatasync", None) or os.fsync)(fd)


class AuditLog:
    """Append-only audit log; an EventBus listener (``bus.subscribe(log)``).

    Each event is ONE ``os.write`` of one complete line on an ``O_APPEND``
    descriptor. When the call returns, the event is *acknowledged*:

    - ``fsync="every_event"``: the line was fsynced before returning. An
      acknowledged event survives a process crash (kill -9) and power loss.
    - ``fsync="group"``: a background thread fsyncs every ``group_commit_ms``.
      A process crash loses nothing (the write already reached the kernel);
      power loss or an OS crash can lose at most the last ``group_commit_ms``
      of acknowledged events.
    - ``fsync="none"``: the OS decides when to flush. A process crash loses
      nothing; power loss can lose anything not yet flushed.

    On open, a torn final line (left by a crash mid-write or by power loss)
    is moved to ``<name>.torn-<n>``, the log is truncated to its last valid
    line and a ``log_repaired`` event is appended (also kept in
    ``self.repaired``). That is never fatal. An invalid line in the middle
    is left alone: ``verify`` reports it.

    One writer per file: ``seq`` and ``prev`` come from this object's state.
    It is thread-safe within the process.
    """

    def __init__(
        self,
        path: str | Path,
        fsync: FsyncPolicy = "every_event",
        group_commit_ms: float = 50,
        session: str | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        if fsync not in ("every_event", "group", "none"):
            raise ValueError(f"unknown fsync policy {fsync!r}")
        self.path = Path(path)
        self.fsync = fsync
        self.session = session or self.path.stem
        self._redactor = redactor or Redactor()
        self._lock = threading.Lock()  # seq, prev and the write
        self._sync_lock = threading.Lock()  # the fd stays open during a group fsync
        self._dirty = False
        self._fd: int | None = None
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self.repaired: LogRepaired | None = None
        self._open()
        if fsync == "group":
            self._start_flusher(group_commit_ms / 1000)

    # -- open and repair ---------------------------------------------------

    def _open(self) -> None:
        private_dir(self.path.parent)
        created = not self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, PRIVATE_FILE)
        if created and self.fsync != "none":
            fsync_dir(self.path.parent)  # the file's name must survive power loss too
        size = os.fstat(self._fd).st_size
        tail = _scan_tail(self._fd, size)
        self._seq = tail.last_seq
        self._prev = GENESIS if tail.last_line is None else sha256_hex(tail.last_line)
        self._size = tail.good_end
        if tail.good_end < size:
            self._repair(tail.good_end, size)

    def _repair(self, good_end: int, size: int) -> None:
        assert self._fd is not None
        torn = os.pread(self._fd, size - good_end, good_end)
        side = _side_file(self.path)
        # The torn bytes reach the side file (durably) before they leave the log.
        with open(os.open(side, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE), "wb") as out:
            out.write(torn)
            out.flush()
            os.fsync(out.fileno())
        fsync_dir(self.path.parent)
        os.ftruncate(self._fd, good_end)
        os.fsync(self._fd)
        event = LogRepaired(session=self.session, side_file=side.name, bytes=len(torn))
        self(event)
        self.repaired = event

    # -- writing -----------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return self._seq

    def __call__(self, event: Event) -> None:
        if event.type in TRANSIENT:  # live-view only (llm_progress): see pliny.events
            return
        with self._lock:
            if self._fd is None:
                raise AuditFailure(f"audit log {self.path} is closed")
            seq = self._seq + 1
            line = self._encode(event, seq, self._prev)
            self._write(line)
            self._seq = seq
            self._prev = sha256_hex(line[:-1])
            event.seq = seq
            if self.fsync == "every_event":
                try:
                    _sync(self._fd)
                except OSError as exc:  # written but maybe not durable: say so, loudly
                    raise self._failure("fsync", exc) from exc
            else:
                self._dirty = True

    def _encode(self, event: Event, seq: int, prev: str) -> bytes:
        """The event's line. Fast path: pydantic's JSON with ``prev`` spliced in."""
        extra = event.model_extra or {}
        if "prev" not in extra and "hash" not in extra:
            try:
                body = event.model_dump_json(exclude=_SEQ).encode()
            except ValueError:  # e.g. a lone surrogate: the stdlib path escapes it
                body = b""
            if body and not self._redactor.needed(body.decode()):
                return seal(body[:-1] + b',"seq":%d,"prev":"%s"}' % (seq, prev.encode()))
        data = {k: v for k, v in event.model_dump(mode="json").items() if k not in ("prev", "hash")}
        data.update(seq=seq, prev=prev)
        return encode_line(self._redactor.scrub(data))

    def _write(self, line: bytes) -> None:
        assert self._fd is not None
        done = 0
        try:
            while done < len(line):  # a short write is retried: the next one names the cause
                done += os.write(self._fd, line[done:])
        except OSError as exc:
            self._undo()  # leave no torn line behind
            raise self._failure("write", exc) from exc
        self._size += done

    def _failure(self, what: str, exc: OSError) -> AuditFailure:
        """One line naming the file, the errno and what to do (ENOSPC: free space)."""
        name = errno.errorcode.get(exc.errno or 0, "OSError")
        where = f"free space in {self.path.parent}, then " if exc.errno == errno.ENOSPC else ""
        return AuditFailure(
            f"cannot {what} audit log {self.path}: {name}: {exc.strerror or exc}",
            hint=f"{where}`pliny session resume`",
        )

    def _undo(self) -> None:
        assert self._fd is not None
        with contextlib.suppress(OSError):  # if this fails too, the next open repairs it
            os.ftruncate(self._fd, self._size)

    # -- group commit and close ----------------------------------------------

    def _start_flusher(self, interval: float) -> None:
        def run() -> None:
            while not self._stop.wait(interval):
                self.flush()

        self._flusher = threading.Thread(target=run, name="pliny-audit-fsync", daemon=True)
        self._flusher.start()

    def flush(self) -> None:
        """fsync now if anything was written since the last fsync."""
        with self._sync_lock:
            with self._lock:  # held briefly: writers never wait for the disk here
                if self._fd is None or not self._dirty:
                    return
                self._dirty = False
                fd = self._fd
            _sync(fd)

    def close(self) -> None:
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
            self._flusher = None
        if self.fsync != "none":
            self.flush()
        with self._sync_lock, self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class VerifyResult:
    ok: bool
    events: int  # valid lines checked before the first problem (all of them when ok)
    first_bad_line: int | None = None
    reason: str | None = None
    torn_bytes: int = 0  # an unterminated last line: a crash mid-write, moved aside on reopen


def verify(path: str | Path) -> VerifyResult:
    """Check every line: valid JSON, own hash, consecutive seq, chain to the previous line.

    A torn (unterminated) last line is the normal trace of a crash mid-write,
    not a broken chain: the result stays ok and reports it in ``torn_bytes``.
    """
    prev, count = GENESIS, 0
    with open(path, "rb") as f:  # streamed: logs can be large
        for number, line in enumerate(f, start=1):
            if not line.endswith(b"\n"):  # only the last line can lack one
                return VerifyResult(True, count, torn_bytes=len(line))
            raw = line[:-1]
            problem = _check(raw, number, prev)
            if problem:
                return VerifyResult(False, count, number, problem)
            prev, count = sha256_hex(raw), count + 1
    return VerifyResult(True, count)


def _check(raw: bytes, number: int, prev: str) -> str | None:
    record = _record(raw)
    if record is None:
        return "not a valid JSON event with a seq"
    if record["seq"] != number:
        seq = record["seq"]
        return f"seq {seq} where {number} was expected (line removed, reordered or inserted)"
    if not check_line_hash(raw):
        return "line hash mismatch (line edited)"
    if record.get("prev") != prev:
        return "prev hash does not match the previous line (line removed, inserted or edited)"
    return None
