"""From command to first epoch: the default job's `raykit train` cold (the command starts a local Ray of its
own) vs warm (it joins the Ray that `raykit up` started), each run a fresh process as a user types it.

Per repeat, alternating which side goes first: a cold run; then `raykit up`, a warm run, `raykit down`. Each run
is `python -m raykit train --set train.epochs=E` (the default job: digits CNN, torch, 2 workers) in a new shell's
environment (no RAY_ADDRESS, no RAY_AUTH_MODE) with a Ray temp directory of its own (RAY_TMPDIR), so that no
other Ray on the machine is seen or joined. Reported: seconds from the command's start to its first epoch line,
and to its exit; `raykit up` and `raykit down` themselves.

    .venv/bin/python benchmarks/first_epoch.py [--repeats 2] [--epochs 2] [--results FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, machine_line, spread, write_section  # noqa: E402
from raykit.timing import PHASES  # noqa: E402

SECTION = "## From command to first epoch: cold vs warm local Ray"
REPO = Path(__file__).resolve().parents[1]
FIRST_EPOCH = re.compile(r"\bepoch +1/\d+ ")  # rank 0's line for epoch 1 (raykit.history.epoch_line)
TARGETS = {"cold": 20.0, "warm": 10.0}  # issue 19: seconds to the first epoch line


def timed_command(args: list[str], env: dict) -> dict:
    """Run ``args``; seconds from its start to its first epoch line (``first``, None without one) and to its
    exit (``wall``). Raises RuntimeError, with the output's tail, when it fails."""
    started, first, lines = time.perf_counter(), None, []
    process = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        if first is None and FIRST_EPOCH.search(line):
            first = time.perf_counter() - started
        lines.append(line)
    code = process.wait()
    if code != 0:
        raise RuntimeError(f"{' '.join(args)} exited {code}:\n{''.join(lines[-30:])}")
    return {"first": first, "wall": time.perf_counter() - started}


def raykit(*args: str) -> list[str]:
    return [sys.executable, "-m", "raykit", *args]


def shell_env(ray_temp: str) -> dict:
    """A new shell's environment with a Ray temp directory of the benchmark's own."""
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    return {**env, "RAY_TMPDIR": ray_temp}


def cold_run(train: list[str]) -> dict:
    # (A short path: Ray's socket paths under it must stay short.)
    with tempfile.TemporaryDirectory(prefix="rkcold", dir="/tmp", ignore_cleanup_errors=True) as ray_temp:
        return timed_command(raykit(*train), shell_env(ray_temp))


def warm_run(train: list[str]) -> dict:
    from raykit.ray.local import free_port

    with tempfile.TemporaryDirectory(prefix="rkwarm", dir="/tmp", ignore_cleanup_errors=True) as ray_temp:
        env = shell_env(ray_temp)
        up = timed_command(raykit("up", "--port", str(free_port())), env)
        try:
            run = timed_command(raykit(*train), env)
        finally:
            down = timed_command(raykit("down"), env)
    return {**run, "up": up["wall"], "down": down["wall"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--results", type=Path, default=RESULTS, help="Markdown file to update")
    args = parser.parse_args()
    storage = tempfile.mkdtemp(prefix="raykit-bench-first-epoch-")
    runs: dict = {"cold": [], "warm": []}
    for index in range(args.repeats):  # alternate (and swap who goes first), so drift hits both sides
        order = [("cold", cold_run), ("warm", warm_run)]
        for side, run in order if index % 2 == 0 else order[::-1]:
            train = ["train", "--set", f"train.epochs={args.epochs}", "--set", f"storage={storage}",
                     "--set", f"name={side}-{index}"]
            timed = run(train)
            result = json.loads((Path(storage) / f"{side}-{index}" / "result.json").read_text())
            runs[side].append({**timed, "timings": result["timings"]})
    table = render(runs, args.epochs, args.repeats, machine_line())
    print(table)
    write_section(SECTION, table, args.results)


def render(runs: dict, epochs: int, repeats: int, machine: str) -> str:
    cold, warm = runs["cold"], runs["warm"]

    def seconds(rs, key):
        return spread([r[key] for r in rs], 1, " s")

    def ratio(key):
        return spread([w[key] / c[key] for w, c in zip(warm, cold)], 2)

    met = {side: statistics.median(r["first"] for r in runs[side]) <= target for side, target in TARGETS.items()}
    verdict = " / ".join(f"{'met' if met[side] else 'NOT met'}" for side in TARGETS)
    command = f"`raykit train --set train.epochs={epochs}`"
    lines = [SECTION, "", machine + f" The default job (digits CNN, torch, 2 workers, {epochs} epochs) as {command} "
             "in a fresh process with a new shell's environment: cold, the command starts its own local Ray; warm, it "
             f"joins the Ray that `raykit up` started before it. {repeats} repeats alternating the sides; median "
             "(min, max).", "",
             "| measure | cold | warm (after `raykit up`) | warm / cold | target cold / warm | |",
             "|---|---|---|---|---|---|",
             f"| seconds from command to first epoch line, {command} | {seconds(cold, 'first')} | "
             f"{seconds(warm, 'first')} | {ratio('first')} | <= {TARGETS['cold']:g} / <= {TARGETS['warm']:g} | "
             f"{verdict} |",
             f"| seconds from command to exit, {command} | {seconds(cold, 'wall')} | {seconds(warm, 'wall')} | "
             f"{ratio('wall')} | | |", "",
             f"`raykit up` itself: {seconds(warm, 'up')}, once per session of work; `raykit down`: "
             f"{seconds(warm, 'down')}.", "",
             "Where the run's time goes (`result.json` timings; the first epoch line comes after the phases above "
             "epochs and epoch 1):", "", "| part | cold | warm |", "|---|---|---|",
             *[f"| {label} | {phase(cold, key)} | {phase(warm, key)} |" for key, _, label in PHASES
               if any(r["timings"].get(key) for r in cold + warm)], ""]
    return "\n".join(lines)


def phase(runs: list[dict], key: str) -> str:
    return spread([r["timings"].get(key, 0.0) for r in runs], 1, " s")


if __name__ == "__main__":
    main()
