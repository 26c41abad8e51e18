"""A local Ray that outlives one command: ``raykit up`` starts one for this machine in the background and
``raykit down`` stops it -- and only it, never a Ray that ``ray start``, a notebook or a cluster launcher started.

``raykit up`` runs ``ray start --head`` as the leader of a new process session, so every process of that Ray
(GCS, raylet, agents, workers) carries one session id that no other process on the machine has. Its record,
``raykit_up.json`` beside the address file ``ray start`` writes (Ray's temp directory, ``RAY_TMPDIR`` moves
both), names that session id, the GCS and raylet pids, the GCS address, the session directory and the auth
mode. A record counts only while its GCS and raylet are alive, in that session and serving that address: one
left by a Ray that died never joins or stops anything.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import ray  # noqa: F401  (puts its own psutil, ray/thirdparty_files, on the path)
import psutil  # noqa: E402

RECORD_NAME = "raykit_up.json"
LOG_NAME = "raykit_up.log"
GCS_PORT = 6379  # `ray start --head`'s own default, so `ray.init("127.0.0.1:6379")` finds it too
DASHBOARD_PORT = 8265
# The listeners `ray start --head` opens besides the GCS, at these ports unless told: a second Ray on the
# machine (a notebook's ray.init(), a test session's) may hold them, and this one then takes free ports.
SIDE_PORTS = {"--dashboard-agent-listen-port": 52365, "--ray-client-server-port": 10001}
START_TIMEOUT_S = 180
# Per step, on SIGTERM before SIGKILL. `ray stop` allows 16 s over its three steps, but on Ray 2.60 the raylet
# and GCS do not exit on SIGTERM within 8 s (measured): a longer grace only delays the SIGKILL they get.
STOP_GRACE_S = 1


@dataclasses.dataclass(frozen=True)
class LocalRay:
    """One Ray that ``raykit up`` started, as its record says."""

    address: str  # the GCS address, host:port
    session_dir: str
    session_id: int  # the session its processes share (the pid of the `ray start` that led it)
    gcs_pid: int
    raylet_pid: int
    auth_mode: str  # "token" or "disabled": what clients joining it must use
    num_cpus: float
    num_gpus: float
    dashboard: str  # its URL, or "" when off
    started_at: float  # time.time()

    def describe(self) -> str:
        dashboard = f", dashboard {self.dashboard}" if self.dashboard else ""
        return (f"{self.address} ({self.num_cpus:g} CPUs, {self.num_gpus:g} GPUs, {self.auth_mode} auth{dashboard}; "
                f"session {self.session_dir})")


def record_path() -> Path:
    """Where the record lives: beside ``ray start``'s address file."""
    from ray._common.utils import get_ray_address_file

    return Path(get_ray_address_file(None)).with_name(RECORD_NAME)


def read_record() -> LocalRay | None:
    """The record ``raykit up`` left, alive or not; None when there is none (or it is unreadable)."""
    try:
        return LocalRay(**json.loads(record_path().read_text()))
    except (OSError, ValueError, TypeError):
        return None


def running() -> LocalRay | None:
    """The Ray ``raykit up`` started, if it is still running; else None."""
    local = read_record()
    return local if local is not None and is_running(local) else None


def is_running(local: LocalRay) -> bool:
    """Whether the recorded Ray is alive: its GCS and raylet processes in its session, the raylet serving the
    recorded address (pids alone could name processes that reused them)."""
    return (_is_member(local.gcs_pid, local.session_id, "gcs_server", f"--session-dir={local.session_dir}")
            and _is_member(local.raylet_pid, local.session_id, "raylet", f"--gcs-address={local.address}"))


def _is_member(pid: int, session_id: int, program: str, flag: str) -> bool:
    try:
        cmdline = psutil.Process(pid).cmdline()
        return os.getsid(pid) == session_id and _program(cmdline) == program and flag in cmdline
    except (psutil.Error, OSError):
        return False


def _program(cmdline: list[str]) -> str:
    return os.path.basename(cmdline[0]) if cmdline else ""


def start(port: int = GCS_PORT, num_cpus: float | None = None, num_gpus: float | None = None,
          dashboard_port: int | None = None) -> LocalRay:
    """Start a local Ray in the background with this machine's CPUs and GPUs (or ``num_cpus``/``num_gpus``),
    its dashboard only with ``dashboard_port``, token auth unless ``RAY_AUTH_MODE`` says otherwise (as
    ``ray.init()`` does for a new local Ray), and record it. Raises StartError when it does not come up."""
    if not _port_is_free(port):
        raise StartError(f"port {port} is in use (another Ray, or another program); choose another with --port")
    auth_mode = _auth_mode_for_new_ray()
    log = record_path().with_name(LOG_NAME)
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-c", "from ray.scripts.scripts import main; main()", "start", "--head",
               f"--port={port}", "--disable-usage-stats", *_side_port_flags(), *_resource_flags(num_cpus, num_gpus),
               *_dashboard_flags(dashboard_port)]
    env = {**os.environ, "RAY_AUTH_MODE": auth_mode}
    env.pop("RAY_ADDRESS", None)
    with open(log, "w") as out:
        # A new session: the Ray's processes are its members and no terminal's Ctrl-C or hang-up reaches them.
        starter = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            code = starter.wait(timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            code = None
    local = _find_started(starter.pid, auth_mode, dashboard_port) if code == 0 else None
    if local is None:
        stop_session(starter.pid)
        raise StartError(f"`ray start --head` did not bring up a Ray (exit code {code}); its output "
                         f"({log}):\n{_tail(log)}")
    record_path().write_text(json.dumps(dataclasses.asdict(local), indent=1))
    return local


def _find_started(session_id: int, auth_mode: str, dashboard_port: int | None) -> LocalRay | None:
    """The record of the Ray whose processes lead from ``session_id``: its GCS and raylet by their command lines."""
    gcs = raylet = None
    for process in _members(session_id):
        try:
            cmdline = process.cmdline()
        except psutil.Error:
            continue
        if _program(cmdline) == "gcs_server":
            gcs = process.pid, _flag(cmdline, "--session-dir")
        elif _program(cmdline) == "raylet":
            raylet = process.pid, _flag(cmdline, "--gcs-address"), _flag(cmdline, "--static_resource_list")
    if gcs is None or raylet is None or not gcs[1] or not raylet[1]:
        return None
    resources = (raylet[2] or "").split(",")
    amounts = dict(zip(resources[::2], resources[1::2]))
    return LocalRay(address=raylet[1], session_dir=gcs[1], session_id=session_id, gcs_pid=gcs[0], raylet_pid=raylet[0],
                    auth_mode=auth_mode, num_cpus=float(amounts.get("CPU", 0)), num_gpus=float(amounts.get("GPU", 0)),
                    dashboard=f"http://127.0.0.1:{dashboard_port}" if dashboard_port else "", started_at=time.time())


def _flag(cmdline: list[str], name: str) -> str | None:
    prefix = name + "="
    return next((arg[len(prefix):] for arg in cmdline if arg.startswith(prefix)), None)


def _auth_mode_for_new_ray() -> str:
    """``RAY_AUTH_MODE`` when set; else token auth, with a token made now if this machine has none (where
    ``ray get-auth-token --generate`` puts it), as Ray 2.60's ``ray.init()`` does for a new local Ray."""
    mode = (os.environ.get("RAY_AUTH_MODE") or "token").lower()
    if mode == "token":
        from ray._private.authentication.authentication_token_setup import generate_and_save_token
        from ray._raylet import AuthenticationTokenLoader

        loader = AuthenticationTokenLoader.instance()
        if not loader.has_token(ignore_auth_mode=True):
            generate_and_save_token()
            loader.reset_cache()
    return mode


def _resource_flags(num_cpus: float | None, num_gpus: float | None) -> list[str]:
    return [*([f"--num-cpus={num_cpus:g}"] if num_cpus is not None else []),
            *([f"--num-gpus={num_gpus:g}"] if num_gpus is not None else [])]


def _dashboard_flags(dashboard_port: int | None) -> list[str]:
    if dashboard_port is None:
        return ["--include-dashboard=false"]
    return ["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}"]


def _side_port_flags() -> list[str]:
    return [f"{flag}={port if _port_is_free(port) else free_port()}" for flag, port in SIDE_PORTS.items()]


def _port_is_free(port: int) -> bool:
    """Whether a server could listen on ``port``: none listens there (connections of a Ray stopped a moment
    ago, waiting out TCP's TIME_WAIT, do not hold it: Ray's servers reuse the address, as this probe does)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


def stop(local: LocalRay) -> None:
    """Stop the recorded Ray (every process of its session) and forget it. The caller checks first that it
    runs (:func:`is_running`): a record's session id alone is never trusted."""
    stop_session(local.session_id)
    forget(local)


def forget(local: LocalRay) -> None:
    """Remove the record, and ``ray start``'s address file when it names this Ray and no running Ray serves
    that address now (as ``ray stop`` clears it)."""
    record_path().unlink(missing_ok=True)
    from ray._common.utils import get_ray_address_file, reset_ray_address

    address_file = Path(get_ray_address_file(None))
    if address_file.is_file() and address_file.read_text().strip() == local.address and not is_served(local.address):
        reset_ray_address()


def is_served(address: str) -> bool:
    """Whether a raylet on this machine runs for the GCS at ``address``: a live local Ray has that address."""
    from ray._private.services import find_gcs_addresses

    find_gcs_addresses.cache_clear()  # Ray caches what it found; a Ray may have stopped since
    return address in find_gcs_addresses()


def stop_session(session_id: int) -> None:
    """Terminate the processes of one session in `ray stop`'s order: the raylet (it stops its workers), the
    rest, the GCS last; each step SIGTERM, then SIGKILL after STOP_GRACE_S."""
    members = _members(session_id)
    first = [p for p in members if _name(p) == "raylet"]
    last = [p for p in members if _name(p) == "gcs_server"]
    for step in (first, None, last):
        processes = step if step is not None else [p for p in _members(session_id) if p not in first + last]
        for process in processes:
            _signal(process, signal.SIGTERM)
        alive = _still_running(processes, STOP_GRACE_S)
        for process in alive:
            _signal(process, signal.SIGKILL)
        _still_running(alive, 2)


def _still_running(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Those of ``processes`` still running after up to ``timeout`` seconds. An exited process nobody has
    reaped yet (a zombie: `ray start`'s processes are orphans, and a container's first process may not reap
    them) counts as gone; psutil.wait_procs waits out its timeout on those."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [process for process in processes if _running(process)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _members(session_id: int) -> list[psutil.Process]:
    """The running processes of a session (an exited one not yet reaped is not one)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.pid != os.getpid() and os.getsid(process.pid) == session_id and _running(process):
                found.append(process)
        except (psutil.Error, OSError):
            continue
    return found


def _name(process: psutil.Process) -> str:
    try:
        return _program(process.cmdline())
    except psutil.Error:
        return ""


def _signal(process: psutil.Process, signum: int) -> None:
    try:
        process.send_signal(signum)
    except psutil.Error:
        pass


class StartError(RuntimeError):
    """``raykit up`` could not start a local Ray."""
