"""Run a Ray Tune sweep from a run spec on the cluster this job runs in.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/tune.py jobs/configs/digits_sweep.yaml --set storage=/shared/sweeps

Connects to the running cluster (``ray.init(address="auto")``), or starts a local Ray when there is
none. Running the same sweep again (same name and storage) resumes it. Exits 0 when a best trial was
found, 2 on an invalid spec, 1 when the sweep failed.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the working dir's raykit

from raykit.cli import EXIT_FAILED, EXIT_OK, add_run_arguments, config_of, guarded, overrides_of  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    args.command = "tune"

    def run() -> int:
        from raykit.api import tune

        result = tune(config_of(args), overrides=overrides_of(args), address=args.address or "auto")
        return EXIT_OK if result.best_trial is not None else EXIT_FAILED

    argv = sys.argv[1:] if argv is None else argv
    return guarded(run, debug=args.debug, command=["python", "jobs/tune.py", *argv])


if __name__ == "__main__":
    sys.exit(main())
