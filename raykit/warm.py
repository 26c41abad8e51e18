"""``raykit up`` / ``raykit down``: a warm local Ray that outlives one command.

``raykit up`` starts a Ray for this machine in the background (raykit/ray/local.py says how it is recorded);
``raykit train``, ``raykit tune`` and ``ray.init()`` on this machine then join it instead of starting their own,
which saves the seconds of a Ray start on every run. ``raykit down`` stops it, and refuses any Ray that
``raykit up`` did not start.
"""

from __future__ import annotations

import argparse
import time

EXIT_OK, EXIT_REFUSED = 0, 1

UP_EXAMPLES = """\
examples:
  raykit up                        # this machine's CPUs and GPUs, dashboard off, token auth
  raykit up --dashboard            # with the dashboard on http://127.0.0.1:8265
  raykit up --num-cpus 4 --port 6380
  raykit up --status               # is it up? (exit 0 when it is)
then: raykit train ...            # joins it; stop it with `raykit down`
"""


def add_warm_ray_commands(commands) -> None:
    """Add ``up`` and ``down`` to the CLI's sub-commands; run them with :func:`run_up` and :func:`run_down`."""
    up = commands.add_parser(
        "up", help="start a local Ray in the background that later commands join (stop it with `raykit down`)",
        description="Start a local Ray for this machine in the background (`ray start --head` with its CPUs and "
                    "GPUs, dashboard off unless asked, token auth unless RAY_AUTH_MODE says otherwise) and record "
                    "that raykit started it. `raykit train` and `raykit tune` on this machine then join it instead "
                    "of starting a Ray of their own, and leave it running when they end. When a local Ray is already "
                    "running, says so and starts nothing.",
        epilog=UP_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    up.add_argument("--port", type=int, default=None, help="the GCS port (default: 6379, Ray's own)")
    up.add_argument("--num-cpus", type=float, default=None, help="CPUs to offer (default: this machine's)")
    up.add_argument("--num-gpus", type=float, default=None, help="GPUs to offer (default: this machine's)")
    up.add_argument("--dashboard", action="store_true", help="start Ray's dashboard too (needs ray[default])")
    up.add_argument("--dashboard-port", type=int, default=None, help="the dashboard's port (default 8265)")
    up.add_argument("--status", action="store_true",
                    help="only say whether a Ray started by `raykit up` is running (exit 0) or not (exit 1)")
    up.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    down = commands.add_parser(
        "down", help="stop the local Ray that `raykit up` started (never any other Ray)",
        description="Stop the local Ray that `raykit up` started: only when its record matches the running "
                    "processes. A Ray started otherwise (`ray start`, a cluster) is left running, and the command "
                    "exits 1 saying so.",
        epilog="examples:\n  raykit down\n  raykit up && raykit train --set train.epochs=5 && raykit down",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    down.add_argument("--debug", action="store_true", help="show full tracebacks for errors")


def run_up(args: argparse.Namespace) -> int:
    """Start the warm Ray unless a local Ray runs already; with ``--status``, only report."""
    from raykit.ray import local
    from raykit.ray.cluster import running_local_ray

    if args.status:
        return _status()
    started = local.running()
    if started is not None:
        print(f"raykit: the local Ray that `raykit up` started is already up at {started.describe()}, since "
              f"{_clock(started.started_at)}\nstop it with: raykit down")
        return EXIT_OK
    other = running_local_ray()
    if other:
        print(f"raykit: a local Ray that raykit did not start (`ray start`) is already up at {other}; raykit train "
              "and raykit tune join it. Not starting a second one (`raykit down` leaves that one alone).")
        return EXIT_OK
    dashboard_port = args.dashboard_port or (local.DASHBOARD_PORT if args.dashboard else None)
    began = time.perf_counter()
    try:
        started = local.start(args.port or local.GCS_PORT, args.num_cpus, args.num_gpus, dashboard_port)
    except local.StartError as error:
        if args.debug:
            raise
        print(f"raykit: {error}")
        return EXIT_REFUSED
    print(f"raykit: started a local Ray at {started.describe()} in {time.perf_counter() - began:.1f} s\n"
          "raykit train, raykit tune and ray.init() on this machine join it instead of starting their own.\n"
          "stop it with: raykit down")
    return EXIT_OK


def run_down(args: argparse.Namespace) -> int:
    """Stop the Ray that ``raykit up`` started; refuse (exit 1) when the running local Ray is another."""
    from raykit.ray import local
    from raykit.ray.cluster import running_local_ray

    recorded = local.read_record()
    if recorded is not None and local.is_running(recorded):
        local.stop(recorded)
        print(f"raykit: stopped the local Ray at {recorded.address} that `raykit up` started")
        return EXIT_OK
    if recorded is not None:
        local.forget(recorded)
        print(f"raykit: the Ray that `raykit up` started at {recorded.address} is no longer running; removed its "
              "record")
    other = running_local_ray()
    if other:
        print(f"raykit: the local Ray at {other} was not started by `raykit up`; leaving it running (if it is "
              "yours, `ray stop` stops it, and every other Ray on this machine)")
        return EXIT_REFUSED
    if recorded is None:
        print("raykit: no Ray started by `raykit up` is running")
    return EXIT_OK


def _status() -> int:
    from raykit.ray import local
    from raykit.ray.cluster import running_local_ray

    started = local.running()
    if started is not None:
        print(f"raykit: up at {started.describe()}, since {_clock(started.started_at)}\nstop it with: raykit down")
        return EXIT_OK
    recorded = local.read_record()
    if recorded is not None:
        print(f"raykit: the Ray that `raykit up` started at {recorded.address} is no longer running "
              "(`raykit down` removes its record)")
    other = running_local_ray()
    if other:
        print(f"raykit: no Ray started by `raykit up`; a local Ray started otherwise runs at {other} (raykit train "
              "joins it)")
    elif recorded is None:
        print("raykit: no local Ray is running; `raykit up` starts one")
    return EXIT_REFUSED


def _clock(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment))
