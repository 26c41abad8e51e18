"""Ctrl-C and SIGTERM: a run stops cleanly and says how to continue it.

A signal becomes :class:`Interrupted` (a ``KeyboardInterrupt``) in the driver's main thread, so every
``finally`` runs on the way out: the Ray Train run is aborted (its workers stop; checkpoints already
written stay and a run with the same name resumes from the latest), the run's lock file is removed, and
at exit Ray's own shutdown stops the local Ray that this process started -- and only that one: a Ray it
joined (``ray start``, ``raykit up``, a cluster, ``RAY_ADDRESS``) is only disconnected from.

Exit codes follow the shell's 128 + signal number: 130 after SIGINT (Ctrl-C), 143 after SIGTERM (``kill``,
a scheduler's stop, a preemption notice). A second signal while the run is being aborted stops waiting
for the abort.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import threading
from typing import Callable, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The driver got SIGINT or SIGTERM (``signum``); ``run_name`` is the run or sweep to resume, once known."""

    def __init__(self, signum: int = signal.SIGINT, run_name: str | None = None):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)
        self.run_name = run_name

    @property
    def exit_code(self) -> int:
        """128 + the signal's number: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


# The signals raykit's handlers received, newest last. Ray's ray.get turns an exception raised by a signal
# handler while it waits into a plain KeyboardInterrupt; this is how the signal is known again.
_received: list[int] = []


def raise_interrupted(signum: int, frame=None) -> None:
    """A signal handler: raise :class:`Interrupted` in the main thread."""
    _received.append(int(signum))
    raise Interrupted(signum)


def as_interrupted(exc: KeyboardInterrupt) -> Interrupted:
    """``exc`` as an :class:`Interrupted` naming the signal that raised it (a plain KeyboardInterrupt is the
    last signal raykit's handlers received, else SIGINT)."""
    return exc if isinstance(exc, Interrupted) else Interrupted(_received[-1] if _received else signal.SIGINT)


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted` (SIGTERM would otherwise end the
    process on the spot, with no cleanup: no lock removed, no Ray shutdown). Outside the main thread, where
    Python delivers no signals, it does nothing."""
    _received.clear()
    with handlers_restored():
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                signal.signal(signum, raise_interrupted)
        yield


@contextlib.contextmanager
def kept() -> Iterator[None]:
    """Within the block a library may install its own SIGINT/SIGTERM handlers (``ray.init`` makes SIGTERM
    ``sys.exit(15)``); where raykit's were installed before, they are put back after it."""
    main = threading.current_thread() is threading.main_thread()
    ours = {signum for signum in SIGNALS if main and signal.getsignal(signum) is raise_interrupted}
    try:
        yield
    finally:
        for signum in ours:
            signal.signal(signum, raise_interrupted)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """SIGINT and SIGTERM are held back within the block and delivered as it ends, where the handlers of
    its start act on them (raykit's raise :class:`Interrupted`). For ``ray.init``: a Ctrl-C landing in its
    connection to the cluster's GCS left the driver hung for good (seen on CI). Both are blocked in this
    thread, so the threads Ray starts meanwhile inherit the block and never receive them; one that another
    thread receives is only noted, then raised again. Outside the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []

    def note(signum: int, frame) -> None:
        held.append(signum)

    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    for signum in SIGNALS:
        signal.signal(signum, note)
    blocking = hasattr(signal, "pthread_sigmask")  # POSIX; elsewhere only noted
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS) if blocking else None
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if signal.getsignal(signum) is note:  # one the block installed (ray.init's SIGTERM exit) stays
                signal.signal(signum, handler)
        if blocking:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # one blocked meanwhile arrives now
        if held:
            signal.raise_signal(held[0])


def abort_then_raise(abort: Callable[[], None]) -> None:
    """Install handlers for SIGINT and SIGTERM that call ``abort()`` once (stopping what runs elsewhere,
    e.g. a Ray Train controller; its errors are ignored: it may be gone already), then raise
    :class:`Interrupted`. The caller restores the previous handlers (:func:`handlers_restored`)."""
    aborted = []

    def handler(signum: int, frame) -> None:
        _received.append(int(signum))
        if not aborted:
            aborted.append(signum)
            with contextlib.suppress(Exception):
                abort()
        raise Interrupted(signum)

    for signum in SIGNALS:
        signal.signal(signum, handler)


def forward_to(stop: Callable[[], Callable | None]) -> "Forwarded":
    """Handlers for SIGINT and SIGTERM that remember the signal and call the handler ``stop()`` returns (a
    library's own graceful stop, e.g. Ray Tune's, installed after this); a second signal, or no such
    handler, raises :class:`Interrupted` at once. After the library returns, :meth:`Forwarded.raise_if_signalled`."""
    forwarded = Forwarded()

    def handler(signum: int, frame) -> None:
        _received.append(int(signum))
        target = stop()
        if forwarded.signum is not None or not callable(target):
            raise Interrupted(signum)
        forwarded.signum = signum
        target(signum, frame)

    for signum in SIGNALS:
        signal.signal(signum, handler)
    return forwarded


class Forwarded:
    """The first signal :func:`forward_to`'s handlers passed on, if any."""

    signum: int | None = None

    def raise_if_signalled(self) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum)


@contextlib.contextmanager
def handlers_restored() -> Iterator[None]:
    """Put back the SIGINT and SIGTERM handlers of the block's start when it ends (in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def resumable(run_name: str) -> Iterator[None]:
    """An interrupt in the block names ``run_name``, the run that the same command with that name resumes."""
    _received.clear()
    try:
        yield
    except KeyboardInterrupt as exc:
        interrupted = as_interrupted(exc)
        interrupted.run_name = interrupted.run_name or run_name
        if interrupted is exc:
            raise
        raise interrupted from None


def message(exc: KeyboardInterrupt, command: list[str]) -> str:
    """The one line printed for an interrupt: the signal, and the exact command that resumes the run
    (``command`` plus ``--set name=<run>`` when it does not name the run already)."""
    exc = as_interrupted(exc)
    name = exc.run_name
    head = f"raykit: interrupted by {signal.Signals(exc.signum).name}"
    if not name:  # before a run was under way, or a command that is not a run
        return head
    words = list(command)
    if f"name={name}" not in words:
        words += ["--set", f"name={name}"]
    return f"{head}; resume the run with the same name: {shlex.join(words)}"


def exit_code(exc: KeyboardInterrupt) -> int:
    """130 for Ctrl-C (SIGINT), 143 for SIGTERM."""
    return as_interrupted(exc).exit_code
