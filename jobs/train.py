"""Train from a run spec on the cluster this job runs in.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/train.py jobs/configs/digits_cnn_torch.yaml --set train.epochs=5

Connects to the running cluster (``ray.init(address="auto")``), or starts a local Ray when there is
none. Exits 0 on success, 2 on an invalid spec, 1 when the run fails, 130 / 143 after SIGINT / SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the working dir's raykit

from raykit.cli import add_run_arguments, config_of, guarded, overrides_of  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    args.command = "train"

    def run() -> int:
        from raykit.api import train

        train(config_of(args), overrides_of(args), address=args.address or "auto")
        return 0

    argv = sys.argv[1:] if argv is None else argv
    return guarded(run, debug=args.debug, command=["python", "jobs/train.py", *argv])


if __name__ == "__main__":
    sys.exit(main())
