"""Time to accuracy on digits: seconds from launching a fresh process to a model whose validation accuracy
reached the target (98%), for raykit torch, raykit tf, a plain PyTorch script and a plain Keras script.

Every contender is a new process timed from launch to exit, so imports, Ray's start (raykit starts a
local Ray with 2 workers; with 1 worker it trains
inline in the command's own process and starts no Ray at all) and raykit's end-of-run work (test evaluation, export, plots) all count, as they
would for a user. All stop at the first epoch whose validation accuracy is >= the target (raykit:
`train.stop_at`) on the same split, and report the test accuracy of that model. Contenders alternate
over `--repeats`.

    .venv/bin/python benchmarks/time_to_accuracy.py [--target 0.98] [--repeats 2] [--results FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, machine_line, shared_ray_address, spread, verdict, write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Time to accuracy on digits"
CONTENDERS = {"raykit-torch": "raykit torch (2 workers)", "raykit-tf": "raykit tf (2 workers)",
              "raykit-torch-1": "raykit torch (1 worker: inline, no Ray worker group)",
              "raykit-tf-1": "raykit tf (1 worker: inline, no Ray worker group)",
              "torch": "plain PyTorch", "keras": "plain Keras model.fit"}


def command(contender: str, target: float, max_epochs: int, storage: str, name: str) -> list[str]:
    if contender.startswith("raykit"):
        _, framework, *workers = contender.split("-")
        shared = shared_ray_address()  # smoke tests only: their session's Ray, not a fresh one per run
        one_worker = ["--set", "scaling.num_workers=1"] if workers == ["1"] else []  # data.batch_size is global
        return [sys.executable, "-m", "raykit.cli", "train", "--set", f"framework={framework}", *one_worker,
                "--set", f"train.stop_at={target}", "--set", f"train.epochs={max_epochs}",
                "--set", f"storage={storage}", "--set", f"name={name}", *(["--address", shared] if shared else [])]
    script = f"tta_{contender}.py"
    return [sys.executable, str(REPO / "benchmarks" / "baselines" / script), "--target", str(target),
            "--max-epochs", str(max_epochs)]


def run(contender: str, target: float, max_epochs: int, storage: str, name: str) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}  # a fresh local Ray
    env["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.25"
    started = time.perf_counter()
    out = subprocess.run(command(contender, target, max_epochs, storage, name), cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"{contender} failed:\n{out.stderr[-3000:]}")
    if contender.startswith("raykit"):
        result = json.loads(Path(storage, name, "result.json").read_text())
        epochs = int(result["metrics"]["epoch"])
        return {"seconds": seconds, "epochs": epochs, "test_acc": result["test_metrics"]["test_acc"]}
    return {"seconds": seconds, **json.loads(out.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", type=float, default=0.98)
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", nargs="+", choices=list(CONTENDERS), default=list(CONTENDERS),
                        help="contenders to run (default: all)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="Markdown file to update")
    args = parser.parse_args()
    storage = tempfile.mkdtemp(prefix="raykit-bench-tta-")
    runs: dict = {name: [] for name in args.only}
    for repeat in range(args.repeats):  # alternate, so drift on a shared machine hits every contender
        for contender in args.only:
            runs[contender].append(run(contender, args.target, args.max_epochs, storage, f"tta-{contender}-{repeat}"))
            print(f"{contender}: {runs[contender][-1]}", flush=True)
    table = render(runs, args)
    print(table)
    write_section(SECTION, table, args.results)


def render(runs: dict, args) -> str:
    plain = runs.get("torch") or next(iter(runs.values()))
    lines = [SECTION, "", machine_line() + f" Seconds from launching a fresh process until it exits with a model "
             f"whose validation accuracy reached {args.target:.0%} (the first such epoch; at most {args.max_epochs} "
             "epochs), the seed's CNN, Adam 1e-3, global batch 64, the same stratified split for all; "
             f"{args.repeats} repeats, contenders alternating. raykit's time includes starting a local Ray (2 workers; "
             "1 worker trains inline, in the command's process, with no Ray started), its end-of-run test "
             "evaluation, export and plots.", "",
             f"| contender | seconds to target | epochs | test accuracy at stop | time / "
             f"{'plain PyTorch' if 'torch' in runs else 'first contender'} |",
             "|---|---|---|---|---|"]
    for name, values in runs.items():
        ratio = [v["seconds"] / p["seconds"] for v, p in zip(values, plain)]
        lines.append(f"| {CONTENDERS[name]} | {spread([v['seconds'] for v in values])} | {spread([v['epochs'] for v in values], 0)}"
                     f" | {spread([v['test_acc'] for v in values], 4)} | {spread(ratio, 2)} |")
    if "torch" in runs:
        lines.append("")
        for name in ("raykit-torch", "raykit-torch-1"):
            if name in runs:
                ratios = [v["seconds"] / p["seconds"] for v, p in zip(runs[name], plain)]
                lines.append(verdict(f"Time to target, {CONTENDERS[name]} / plain PyTorch", ratios, 2.5,
                                     at_least=False) + "  ")
    return "\n".join([*lines, ""])


if __name__ == "__main__":
    main()
