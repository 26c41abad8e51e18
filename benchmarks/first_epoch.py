"""From command to first epoch: the default job's `raykit train` cold (the command starts a local Ray of its
own) vs warm (it joins the Ray that `raykit up` started), each run a fresh process as a user types it, beside
the same for a hand-written minimal Ray Train script doing the same job and for the floor: that script with an
empty training function (Ray Train's own start-up on this machine).

Per repeat, alternating which side goes first: the cold runs; then `raykit up`, the warm runs, `raykit down`.
raykit's run is `python -m raykit train --set train.epochs=E` (the default job: digits CNN, torch, 2 workers);
the others `benchmarks/baselines/ray_train_minimal.py --workers 2 --epochs E [--empty]` (warm, they join with
RAY_ADDRESS=auto and the auth mode `raykit up` chose, as a user would). Each in a new shell's environment (no
RAY_ADDRESS, no RAY_AUTH_MODE) with a Ray temp directory of its own (RAY_TMPDIR), so that no other Ray on the
machine is seen or joined. Reported: seconds from the command's start to its first epoch line, and to its
exit; `raykit up` and `raykit down` themselves.

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
CONTENDERS = {"raykit": "`raykit train --set train.epochs={epochs}`",
              "minimal": "hand-written minimal Ray Train script (`benchmarks/baselines/ray_train_minimal.py`)",
              "empty": "the same script with an empty training function (Ray Train's start-up: the floor)"}


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


def contender_command(contender: str, epochs: int, storage: str, name: str) -> list[str]:
    if contender == "raykit":
        return raykit("train", "--set", f"train.epochs={epochs}", "--set", f"storage={storage}", "--set", f"name={name}")
    return [sys.executable, str(REPO / "benchmarks" / "baselines" / "ray_train_minimal.py"), "--workers", "2",
            "--epochs", str(epochs), "--storage", storage, "--name", name, *(["--empty"] if contender == "empty" else [])]


def joining_env(env: dict, ray_temp: str) -> dict:
    """What a hand-written script needs to join the Ray ``raykit up`` started: its address, and token auth
    when that Ray uses it (raykit's own client finds both itself)."""
    record = json.loads(next(Path(ray_temp).rglob("raykit_up.json")).read_text())
    return {**env, "RAY_ADDRESS": "auto", "RAY_AUTH_MODE": record["auth_mode"]}


def cold_runs(contenders: list[str], epochs: int, storage: str, index: int) -> dict:
    runs = {}
    for contender in contenders:
        # (A short path: Ray's socket paths under it must stay short.)
        with tempfile.TemporaryDirectory(prefix="rkcold", dir="/tmp", ignore_cleanup_errors=True) as ray_temp:
            runs[contender] = timed_command(contender_command(contender, epochs, storage, f"{contender}-cold-{index}"),
                                            shell_env(ray_temp))
    return runs


def warm_runs(contenders: list[str], epochs: int, storage: str, index: int) -> dict:
    from raykit.ray.local import free_port

    runs = {}
    with tempfile.TemporaryDirectory(prefix="rkwarm", dir="/tmp", ignore_cleanup_errors=True) as ray_temp:
        env = shell_env(ray_temp)
        up = timed_command(raykit("up", "--port", str(free_port())), env)
        try:
            for contender in contenders:
                runs[contender] = timed_command(contender_command(contender, epochs, storage,
                                                                  f"{contender}-warm-{index}"),
                                                env if contender == "raykit" else joining_env(env, ray_temp))
        finally:
            down = timed_command(raykit("down"), env)
    runs["raykit"] = {**runs["raykit"], "up": up["wall"], "down": down["wall"]}
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--results", type=Path, default=RESULTS, help="Markdown file to update")
    args = parser.parse_args()
    storage = tempfile.mkdtemp(prefix="raykit-bench-first-epoch-")
    runs: dict = {"cold": {name: [] for name in CONTENDERS}, "warm": {name: [] for name in CONTENDERS}}
    for index in range(args.repeats):  # alternate (and swap who goes first), so drift hits every side
        order = [("cold", cold_runs), ("warm", warm_runs)]
        contenders = list(CONTENDERS) if index % 2 == 0 else list(CONTENDERS)[::-1]
        for side, run in order if index % 2 == 0 else order[::-1]:
            for contender, timed in run(contenders, args.epochs, storage, index).items():
                if contender == "raykit":
                    result = json.loads((Path(storage) / f"raykit-{side}-{index}" / "result.json").read_text())
                    timed = {**timed, "timings": result["timings"]}
                runs[side][contender].append(timed)
                print(f"{side} {contender}: {timed['first']:.1f} s to the first epoch line", flush=True)
    table = render(runs, args.epochs, args.repeats, machine_line())
    print(table)
    write_section(SECTION, table, args.results)


def render(runs: dict, epochs: int, repeats: int, machine: str) -> str:
    cold, warm = runs["cold"], runs["warm"]

    def seconds(rs, key):
        return spread([r[key] for r in rs], 1, " s")

    def ratio(contender, key):
        return spread([w[key] / c[key] for w, c in zip(warm[contender], cold[contender])], 2)

    met = {side: statistics.median(r["first"] for r in runs[side]["raykit"]) <= target
           for side, target in TARGETS.items()}
    verdict = " / ".join(f"{'met' if met[side] else 'NOT met'}" for side in TARGETS)
    command = CONTENDERS["raykit"].format(epochs=epochs)
    lines = [SECTION, "", machine + f" The default job (digits CNN, torch, 2 workers, {epochs} epochs) as {command} "
             "in a fresh process with a new shell's environment: cold, the command starts its own local Ray; warm, it "
             "joins the Ray that `raykit up` started before it. Beside it, the same job as a hand-written minimal Ray "
             "Train script (rank 0 prints a line per epoch), and that script with an empty training function: what "
             f"any Ray Train job pays before its first epoch here. {repeats} repeats alternating the sides; median "
             "(min, max).", "",
             "| seconds from command to first epoch line | cold | warm (after `raykit up`) | warm / cold | "
             "target cold / warm | |", "|---|---|---|---|---|---|",
             f"| {command} | {seconds(cold['raykit'], 'first')} | {seconds(warm['raykit'], 'first')} | "
             f"{ratio('raykit', 'first')} | <= {TARGETS['cold']:g} / <= {TARGETS['warm']:g} | {verdict} |",
             *[f"| {CONTENDERS[name]} | {seconds(cold[name], 'first')} | {seconds(warm[name], 'first')} | "
               f"{ratio(name, 'first')} | | |" for name in ("minimal", "empty") if cold.get(name)], "",
             "| seconds from command to exit | cold | warm | warm / cold |", "|---|---|---|---|",
             *[f"| {CONTENDERS[name].format(epochs=epochs)} | {seconds(cold[name], 'wall')} | "
               f"{seconds(warm[name], 'wall')} | {ratio(name, 'wall')} |" for name in CONTENDERS if cold.get(name)], ""]
    if cold.get("empty"):
        above = {side: [r["first"] - e["first"] for r, e in zip(runs[side]["raykit"], runs[side]["empty"])]
                 for side in ("cold", "warm")}
        lines += [f"raykit's first epoch line minus the empty training function's: {spread(above['cold'], 1, ' s')} "
                  f"cold, {spread(above['warm'], 1, ' s')} warm (negative: raykit's comes first, its model, "
                  "optimizer, data and epoch 1 included; raykit's runs leave out, among other things, Ray Train's "
                  "placement-group cleaner process).", ""]
    lines += [f"`raykit up` itself: {seconds(warm['raykit'], 'up')}, once per session of work; `raykit down`: "
              f"{seconds(warm['raykit'], 'down')}.", "",
              "Where raykit's run's time goes (`result.json` timings; the first epoch line comes after the phases "
              "above epochs and epoch 1):", "", "| part | cold | warm |", "|---|---|---|",
              *[f"| {label} | {phase(cold['raykit'], key)} | {phase(warm['raykit'], key)} |"
                for key, _, label in PHASES if any(r["timings"].get(key) for r in cold["raykit"] + warm["raykit"])], ""]
    return "\n".join(lines)


def phase(runs: list[dict], key: str) -> str:
    return spread([r["timings"].get(key, 0.0) for r in runs], 1, " s")


if __name__ == "__main__":
    main()
