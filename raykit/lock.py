"""One driver at a time per run directory: a lease file, ``<storage>/<name>/raykit.lock``.

The lease names its owner (host, pid, the process's start, when the run started, a random token) and a
heartbeat time that the owning driver refreshes every ``heartbeat_s`` seconds while the run lives. A
second ``raykit train`` (or ``raykit tune``: a sweep takes one lease for its directory) with the same name
and storage is refused while the lease is live, with a message naming the owner. A lease is *stale*, and
the next run with that name takes it over, when its process is gone (same host: that pid no longer runs
that process) or its heartbeat is older than ``STALE_AFTER`` heartbeats (any host: a driver killed on
another machine). The lease is removed however the run ends (it returns, raises, Ctrl-C, SIGTERM); only a
killed driver (SIGKILL, a lost machine) leaves it behind, and then it is stale.

How atomic taking a lease is, per store:

- **Local disk** (a path, or ``file://``): the lease is written to a temporary file and hard-linked to
  ``raykit.lock`` (``link`` fails when the name exists, like ``O_CREAT | O_EXCL``): atomic, of two runs
  started at once exactly one creates it, and never seen half-written (also on NFS).
- **fsspec stores** (``memory://``, ``az://``, any scheme pyarrow does not serve): ``open(mode="xb")``.
  How exclusive that is depends on the implementation (fsspec's local files use ``O_EXCL``; ``memory://``
  checks, then creates, in one process); the lease is then read back as below.
- **pyarrow's object stores** (``s3://``, ``gs://``, ``hdfs://``): pyarrow has no conditional create
  (no If-None-Match), so raykit checks that no lease exists, writes one, waits ``SETTLE_S`` (1 s) and
  reads it back: the run whose token is there goes on, the other is refused. S3 and GCS read back what was
  last written (strongly consistent, last writer wins), so two runs are told apart unless one of them
  stalls for longer than ``SETTLE_S`` between its check and its write.

Taking over a stale lease re-reads it just before removing it, so a lease renewed meanwhile is kept; two
runs taking over the same stale lease at the same moment race as two new runs would (above).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from typing import Iterator

from raykit import storage
from raykit.checks import InputError

LOCK_FILE = "raykit.lock"
HEARTBEAT_S = 30.0
STALE_AFTER = 4  # heartbeats missed before a lease is stale on any host
SETTLE_S = 1.0  # object stores without a conditional create: the pause before reading the lease back
logger = logging.getLogger(__name__)


@dataclass
class Lease:
    """What ``raykit.lock`` holds."""

    host: str
    pid: int
    process_start: str | None  # the pid's start time (Linux /proc), so a reused pid is not taken for the owner
    started: float  # when the lease was taken (time.time())
    heartbeat: float  # refreshed every heartbeat_s while the run is alive
    heartbeat_s: float
    token: str  # tells this lease from one taken after it
    kind: str  # "run" or "sweep"

    @classmethod
    def new(cls, kind: str, heartbeat_s: float) -> "Lease":
        now = time.time()
        return cls(socket.gethostname(), os.getpid(), _process_start(os.getpid()), now, now, heartbeat_s,
                   secrets.token_hex(8), kind)

    def encode(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def decode(cls, data: bytes) -> "Lease | None":
        """The lease in ``data``; None for bytes that are not one (a torn write: treated as stale)."""
        try:
            return cls(**json.loads(data))
        except (ValueError, TypeError):
            return None

    def stale_reason(self, now: float | None = None) -> str | None:
        """Why this lease no longer protects a live run, or None while its owner may still be running."""
        age = (now or time.time()) - self.heartbeat
        if self.host == socket.gethostname() and not _same_process_alive(self.pid, self.process_start):
            return f"its process {self.pid} on {self.host} is no longer running"
        if age > STALE_AFTER * self.heartbeat_s:
            return f"its last heartbeat is {age:.0f} s old (refreshed every {self.heartbeat_s:g} s)"
        return None

    def owner(self, now: float | None = None) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return (f"host {self.host}, pid {self.pid}, started {started}, last heartbeat "
                f"{(now or time.time()) - self.heartbeat:.0f} s ago")


class RunLocked(InputError):
    """Another live run holds the run directory's lease; the message names it."""


class RunLock:
    """The lease on ``run_dir`` (a path or URI), held between :meth:`acquire` and :meth:`release`, with a
    thread refreshing its heartbeat meanwhile.

    Example::

        with RunLock("runs/exp1"):
            ...  # no other raykit run writes runs/exp1 meanwhile
    """

    def __init__(self, run_dir: str, kind: str = "run", heartbeat_s: float = HEARTBEAT_S):
        self.run_dir = run_dir
        self.path = storage.join(run_dir, LOCK_FILE)
        self.kind = kind
        self.heartbeat_s = heartbeat_s
        self.lease: Lease | None = None
        self._store = _store_for(self.path)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> "RunLock":
        """Take the lease (taking over a stale one), or raise :class:`RunLocked` naming the owner. A store
        that cannot be written raises :class:`InputError` naming ``storage``."""
        lease = Lease.new(self.kind, self.heartbeat_s)
        try:
            for _ in range(3):  # a stale lease removed, then the race for a new one
                if self._store.create(lease.encode()):
                    if self._store.confirm(lease.token):
                        break
                    raise self._refusal(self._current())
                current = self._current()
                if current is None and self._store.read() is None:
                    continue  # released meanwhile
                reason = current.stale_reason() if current else "it does not read as a lease"
                if reason is None:
                    raise self._refusal(current)
                self._take_over(current, reason)
            else:
                raise self._refusal(self._current())
        except OSError as exc:
            raise InputError([("storage", f"cannot write the run's lock file {self.path} ({exc}); accepted: a "
                                          "storage location this process can create files in")]) from None
        self.lease = lease
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="raykit-lease", daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        """Stop the heartbeat and remove the lease, unless another run has taken it over meanwhile."""
        if self.lease is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            current = self._current()
            if current is not None and current.token == self.lease.token:
                self._store.remove()
        except OSError as exc:  # the run itself is over: say so, and leave a lease that will go stale
            logger.warning("raykit: could not remove the lock file %s (%s); it goes stale on its own", self.path, exc)
        self.lease = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _current(self) -> Lease | None:
        data = self._store.read()
        return None if data is None else Lease.decode(data)

    def _take_over(self, stale: Lease | None, reason: str) -> None:
        again = self._current()
        if again is not None and stale is not None and again.token != stale.token:
            return  # another run took it meanwhile: the next round sees that lease
        logger.warning("raykit: taking over the stale lock file %s (%s)", self.path, reason)
        self._store.remove()

    def _refusal(self, owner: Lease | None) -> RunLocked:
        who = owner.owner() if owner else "an owner that could not be read"
        name = os.path.basename(self.run_dir.rstrip("/"))
        return RunLocked([("name", f"{self.run_dir} is in use by another raykit {owner.kind if owner else 'run'} "
                                   f"({who}); accepted: wait for it to end, or another name (not {name!r}). A lease "
                                   f"whose driver is gone goes stale by itself ({STALE_AFTER} missed heartbeats on "
                                   f"another host, at once on this one); or remove {self.path}")])

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                current = self._current()
                if current is None or current.token != self.lease.token:
                    logger.warning("raykit: the lock file %s was taken over by another run (%s); this run no longer "
                                   "holds it", self.path, current.owner() if current else "removed")
                    return
                self.lease.heartbeat = time.time()
                self._store.overwrite(self.lease.encode())
            except OSError as exc:  # a passing storage error: the next beat tries again
                logger.warning("raykit: could not refresh the lock file %s (%s)", self.path, exc)


@contextlib.contextmanager
def held(run_dir: str, kind: str = "run") -> Iterator[RunLock]:
    """``with held(run_dir):`` the run's lease, released however the block ends."""
    with RunLock(run_dir, kind) as lock:
        yield lock


# --- stores ------------------------------------------------------------------------------------------------


class _LocalStore:
    """A local file: O_EXCL creates it atomically."""

    def __init__(self, path: str):
        self.path = path.removeprefix("file://")

    def create(self, data: bytes) -> bool:
        """Write the lease beside the path, then hard-link it there: like ``O_CREAT | O_EXCL``, the link
        fails when the file exists, and the lease appears whole (a reader never sees it half-written)."""
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{LOCK_FILE}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.link(tmp, self.path)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True

    def confirm(self, token: str) -> bool:
        return True  # O_EXCL decided

    def read(self) -> bytes | None:
        try:
            with open(self.path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def overwrite(self, data: bytes) -> None:
        storage.write_bytes(self.path, data)  # a temporary file and a rename: never half-written

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class _ObjectStore:
    """A URI served by pyarrow (s3://, gs://, hdfs://): no conditional create, so check, write, settle and
    read back."""

    def __init__(self, path: str):
        self.path = path

    def create(self, data: bytes) -> bool:
        if self.read() is not None:
            return False
        storage.write_bytes(self.path, data)
        return True

    def confirm(self, token: str) -> bool:
        time.sleep(SETTLE_S)
        current = self.read()
        lease = Lease.decode(current) if current is not None else None
        return lease is not None and lease.token == token

    def read(self) -> bytes | None:
        import pyarrow.fs

        fs, path = storage.filesystem(self.path)
        if fs.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
            return None
        try:
            return storage.read_bytes(self.path)
        except FileNotFoundError:
            return None

    def overwrite(self, data: bytes) -> None:
        storage.write_bytes(self.path, data)

    def remove(self) -> None:
        fs, path = storage.filesystem(self.path)
        with contextlib.suppress(FileNotFoundError):
            fs.delete_file(path)


class _FsspecStore(_ObjectStore):
    """Any other fsspec scheme: ``open(mode="xb")``, exclusive where the implementation makes it so, then
    read back."""

    def create(self, data: bytes) -> bool:
        import fsspec

        fs, path = fsspec.core.url_to_fs(self.path)
        fs.makedirs(fs._parent(path), exist_ok=True)
        try:
            with fs.open(path, "xb") as handle:
                handle.write(data)
        except FileExistsError:
            return False
        return True


def _store_for(path: str):
    if not storage.is_uri(path) or path.startswith("file://"):
        return _LocalStore(path)
    if storage.served_by_pyarrow(path):
        return _ObjectStore(path)
    return _FsspecStore(path)


# --- processes ------------------------------------------------------------------------------------------------


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]  # a zombie has exited; field 22 of stat is starttime


def _same_process_alive(pid: int, process_start: str | None) -> bool:
    """Whether ``pid`` still runs the process that took the lease (on this host)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    if process_start is None or not os.path.isdir("/proc"):
        return True
    return _process_start(pid) == process_start
