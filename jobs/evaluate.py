"""Evaluate a raykit checkpoint on a split of its data, on the cluster this job runs in.

    ray job submit --address http://127.0.0.1:8265 --runtime-env jobs/runtime_env.yaml -- \
        python jobs/evaluate.py /shared/runs/<run>/checkpoint_epoch=0015 --split test

Prints accuracy and per-class precision/recall, and writes evaluation-<split>.json and
confusion-<split>.png next to the run (or to --out). Exits 0 on success, 2 on bad input, 1 on failure.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the working dir's raykit

from raykit.cli import EXIT_OK, add_evaluate_arguments, guarded  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_evaluate_arguments(parser)
    args = parser.parse_args(argv)

    def run() -> int:
        from raykit.api import evaluate

        print(f"evaluating {args.checkpoint} on the {args.split} split", flush=True)
        evaluate(args.checkpoint, args.split, args.overrides, out_dir=args.out, address=args.address or "auto")
        return EXIT_OK

    return guarded(run, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
