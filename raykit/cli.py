"""The ``raykit`` command line: thin over the Python API.

Exit codes: 0 success, 2 invalid spec, arguments or input files (nothing was started), 1 the run failed,
130 interrupted by Ctrl-C (SIGINT), 143 stopped by SIGTERM; after 130 or 143 the same command with the
run's name resumes it (the line printed says the command).
"""

from __future__ import annotations

import argparse
import os
import sys

from raykit import interrupts
from raykit.data.errors import DataError
from raykit.failures import RunFailedError
from raykit.report import add_report_command, run_report
from raykit.spec import SpecError
from raykit.warm import add_warm_ray_commands, run_down, run_up

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

TRAIN_EXAMPLES = """\
examples:
  raykit train                                         # the default job: digits CNN, torch, 2 workers
  raykit train jobs/configs/digits_cnn_torch.yaml --set train.epochs=5 --set optim.lr=3e-3
  raykit train my.yaml --set scaling.num_workers=1 --set name=my-run   # same name again resumes
  RAY_ADDRESS=auto raykit train my.yaml                # join a cluster started with `ray start`
  raykit train base.yaml exp.yaml --set augment.ops.0.degrees=20 --set 'augment.ops+={op: hflip}'

Every spec field can be set with --set DOTTED.KEY=VALUE (values are YAML: 0.01, true, [32, 64], {a: 1});
a number after a list field indexes it (augment.ops.0.degrees, model.filters.-1), KEY+=VALUE appends to it.
Several config files merge left to right: mappings key by key, a later list or value replaces the earlier.
"""


EXIT_CODES = """\
exit codes:
  0    success
  1    the run failed (one line says why; --debug shows the traceback)
  2    invalid spec, arguments or input file: nothing was started
  130  interrupted by Ctrl-C (SIGINT)    143  stopped by SIGTERM
       (the run's workers are stopped and its checkpoints kept; the line printed gives the command that
       resumes it: the same command with the run's name)
"""

TUNE_EXAMPLES = """\
examples:
  raykit tune jobs/configs/digits_sweep.yaml
  raykit tune jobs/configs/digits_cnn_torch.yaml --set scaling.num_workers=1 --set tune.num_samples=8 \\
      --set tune.scheduler=asha --set 'tune.search_space={"optim.lr": {"loguniform": [1e-4, 1e-1]}}'
  raykit train runs/<sweep>/best.yaml                 # retrain the winner

Files: <storage>/<name>/trials.csv, sweep.png, best.yaml, and one directory per trial.
"""


class VersionAction(argparse.Action):
    """``--version``: print :func:`raykit.versions.version_text` and exit 0 (read only when asked)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the versions of raykit, Python, Ray, PyTorch, TensorFlow and Keras, and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        from raykit.versions import version_text

        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raykit", description="Scalable deep-learning training on Ray "
                                     "from one run spec.", epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=VersionAction)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser("train", help="train a model as a run spec says",
                                description="Train a model as a run spec says, on Ray Train workers.",
                                epilog=TRAIN_EXAMPLES + "\n" + EXIT_CODES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(train)
    tune = commands.add_parser(
        "tune", help="sweep hyperparameters with Ray Tune over the spec",
        description="Run the Ray Tune sweep that the spec's tune section describes; every trial trains like "
                    "`raykit train`. Running it again with the same name resumes it.",
        epilog=TUNE_EXAMPLES + "\n" + EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(tune)
    evaluate = commands.add_parser(
        "evaluate", help="evaluate a checkpoint: accuracy, per-class precision/recall, confusion matrix PNG",
        description="Evaluate a raykit checkpoint on a split of its data (the checkpoint's own spec says how). A "
                    "data.uri 'py:' factory is called again; a run fed datasets from Python (data.uri 'python:...') "
                    "is evaluated from Python: raykit.evaluate(checkpoint, datasets=...).",
        epilog="examples:\n  raykit evaluate runs/<run>/checkpoint_epoch=0015 --split test\n"
               "  raykit evaluate s3://bucket/runs/<run>/checkpoint_epoch=0015 --out eval/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_evaluate_arguments(evaluate)
    spec = commands.add_parser("spec", help="validate a run spec and print it resolved, or the field reference",
                               description="Validate CONFIG with its --set overrides and print the full spec "
                                           "as YAML, without starting anything.",
                               epilog="examples:\n  raykit spec jobs/configs/digits_cnn_torch.yaml --set optim.lr=0.01"
                                      "\n  raykit spec base.yaml exp.yaml    # the two files merged, validated"
                                      "\n  raykit spec --reference    # every field, its default and meaning"
                                      "\n  raykit spec --json-schema jobs/configs/raykit.schema.json   # for editors",
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(spec)
    spec.add_argument("--reference", action="store_true",
                      help="print the spec reference (Markdown: docs/spec-reference.md)")
    spec.add_argument("--json-schema", nargs="?", const="-", default=None, metavar="FILE",
                      help="write the spec's JSON Schema (draft-07) to FILE, or print it; editors check and "
                           "complete a config whose first line is '# yaml-language-server: $schema=FILE'")
    preview = commands.add_parser(
        "augment-preview", help="write a PNG grid of original vs augmented training images",
        description="Apply the spec's augmentation (augment.preset + augment.ops) to a few training images "
                    "and write original vs augmented side by side as a PNG.",
        epilog="examples:\n  raykit augment-preview jobs/configs/digits_cnn_torch.yaml --set augment.preset=light"
               "\n  raykit augment-preview my.yaml --set 'augment.ops=[{op: rotate, degrees: 30}]' --out rot.png",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(preview)
    preview.add_argument("--out", default="augment-preview.png", help="PNG to write (default: %(default)s)")
    preview.add_argument("--rows", type=int, default=6, help="how many images (default: %(default)s)")
    add_data_commands(commands)
    add_report_command(commands)
    add_inference_commands(commands)
    add_warm_ray_commands(commands)
    return parser


def add_inference_commands(commands) -> None:
    export = commands.add_parser(
        "export", help="export a checkpoint's model: TorchScript/ONNX (torch), .keras/SavedModel (tf)",
        description="Export the model of a raykit checkpoint for serving. Exported models take float32 NHWC images "
                    "in [0, 1] and return logits; the spec's normalize ops are built in. Each export is checked "
                    "against the checkpoint on a random batch (see <name>.export.json).",
        epilog="examples:\n  raykit export runs/my-run/checkpoint_epoch=0015               # every format of its "
               "framework\n  raykit export runs/my-run/checkpoint_epoch=0015 --format onnx --out deploy/\n"
               "  raykit export s3://bucket/runs/tf-run/checkpoint_epoch=0010 --format saved_model",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _checkpoint_arguments(export, "checkpoint.export_template=model")
    export.add_argument("--format", dest="formats", action="append", default=None,
                        choices=("torchscript", "onnx", "keras", "saved_model"),
                        help="repeatable; default: torchscript + onnx (torch) or keras + saved_model (tf)")
    export.add_argument("--out", default=None, help="directory (path or URI); default: <run>/export")
    predict = commands.add_parser(
        "predict", help="batch inference over a dataset with Ray Data; predictions + probabilities to Parquet",
        description="Predict every image of --data (Parquet, image folder, or .npz; path or URI) with the model of "
                    "CHECKPOINT on Ray Data actors, decoding as its training data was, and write Parquet files to "
                    "--out with columns row, label (-1 if none), prediction, p_<class>.",
        epilog="examples:\n  raykit predict runs/my-run/checkpoint_epoch=0015 --data new-images/ --out preds/\n"
               "  raykit predict s3://b/runs/r/checkpoint_epoch=0015 --data s3://b/unlabelled.parquet "
               "--out s3://b/preds/ --actors 4 --gpu",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _checkpoint_arguments(predict, "data.image_column=img")
    predict.add_argument("--data", required=True, help="dataset to predict (path or URI)")
    predict.add_argument("--out", required=True, help="directory for the Parquet files (path or URI)")
    predict.add_argument("--batch-size", type=int, default=256, help="images per model call (default 256)")
    predict.add_argument("--actors", type=int, default=1, help="model replicas (Ray Data actors; default 1)")
    predict.add_argument("--gpu", action="store_true", default=None, help="one GPU per actor")
    predict.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else local)")


def _checkpoint_arguments(parser: argparse.ArgumentParser, example_override: str) -> None:
    """CHECKPOINT, --set (on the checkpoint's own spec) and --debug."""
    parser.add_argument("checkpoint", help="raykit checkpoint directory (path or URI)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a field of the checkpoint's spec, e.g. {example_override}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")


def run_export(args: argparse.Namespace) -> int:
    from raykit.inference import export

    export(args.checkpoint, args.formats, args.out, args.overrides)
    return EXIT_OK


def run_predict(args: argparse.Namespace) -> int:
    from raykit.inference import predict

    predict(args.checkpoint, args.data, args.out, args.overrides, batch_size=args.batch_size, actors=args.actors,
            use_gpu=args.gpu, address=args.address)
    return EXIT_OK


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """CONFIG, --set and --address: shared by the CLI and the scripts in jobs/."""
    parser.add_argument("config", nargs="*", default=[], metavar="CONFIG",
                        help="run spec YAML files, merged left to right: mappings key by key, a later list or "
                             "value replaces the earlier one (default: the built-in default job)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a spec field by its dotted path, e.g. optim.lr=0.01 (repeatable)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address ('auto' joins a local `ray start` cluster); default: "
                             "RAY_ADDRESS, else a new local Ray")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    parser.add_argument("--smoke-test", action="store_true",
                        help="a quick check of a cluster: 1 epoch of at most %d steps" % SMOKE_STEPS)


SMOKE_STEPS = 5


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """CHECKPOINT, --split, --out, --set, --address: shared by the CLI and jobs/evaluate.py."""
    parser.add_argument("checkpoint", help="raykit checkpoint directory (path or URI)")
    parser.add_argument("--split", default="test", help="train, val or test (default: %(default)s)")
    parser.add_argument("--out", default=None, help="directory for the JSON and PNG (default: <run>/evaluation)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of the checkpoint's spec, e.g. data.split_seed=1")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else local)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    parser.add_argument("--smoke-test", action="store_true", help="accepted for symmetry; evaluation is quick")


def run_evaluate(args: argparse.Namespace) -> int:
    from raykit.api import evaluate

    evaluate(args.checkpoint, args.split, args.overrides, out_dir=args.out, address=args.address)
    return EXIT_OK


def config_of(args: argparse.Namespace) -> "str | list[str] | None":
    """The CONFIG files: None (the default job), one path, or a list of paths to merge."""
    return None if not args.config else args.config[0] if len(args.config) == 1 else list(args.config)


def overrides_of(args: argparse.Namespace) -> list[str]:
    """The --set overrides, with --smoke-test's (applied last, so they win)."""
    smoke = ["train.epochs=1", f"train.max_steps_per_epoch={SMOKE_STEPS}"] if args.smoke_test else []
    if args.smoke_test and args.command == "tune":
        smoke.append("tune.num_samples=1")
    return [*args.overrides, *smoke]


def run_train(args: argparse.Namespace) -> int:
    from raykit.api import train

    train(config_of(args), overrides_of(args), address=args.address)
    return EXIT_OK


def run_tune(args: argparse.Namespace) -> int:
    from raykit.api import tune

    result = tune(config_of(args), overrides=overrides_of(args), address=args.address)
    return EXIT_OK if result.best_trial is not None else EXIT_FAILED


def run_spec(args: argparse.Namespace) -> int:
    from raykit.spec import load_spec, reference_page

    if args.json_schema:
        return write_json_schema(args.json_schema)
    print(reference_page() if args.reference else load_spec(config_of(args), overrides_of(args)).to_yaml(), end="")
    return EXIT_OK


def write_json_schema(target: str) -> int:
    """``raykit spec --json-schema [FILE]``: the schema to FILE, or to stdout for ``-``."""
    from pathlib import Path

    from raykit.spec.json_schema import json_schema_text

    if target == "-":
        print(json_schema_text(), end="")
    else:
        Path(target).write_text(json_schema_text())
        print(f"wrote {target}", file=sys.stderr)
    return EXIT_OK


def run_augment_preview(args: argparse.Namespace) -> int:
    from pathlib import Path

    from raykit.augment import resolve_ops
    from raykit.backends import load_backend
    from raykit.data import load_splits
    from raykit.spec import load_spec
    from raykit.spec.rules import require_installed

    spec = load_spec(config_of(args), overrides_of(args))
    require_installed(spec)  # it imports the framework here, in this process
    images = load_splits(spec.data).train.x[: max(args.rows, 1)]
    backend = load_backend(spec.framework)
    png = backend.augment_preview_png(images, resolve_ops(spec.augment.preset, spec.augment.ops), spec.train.seed,
                                      rows=len(images))
    Path(args.out).write_bytes(png)
    print(f"wrote {args.out}")
    return EXIT_OK


def add_data_commands(commands) -> None:
    data = commands.add_parser("data", help="dataset tools: convert to sharded Parquet, get a named dataset",
                               description="Dataset tools.")
    tools = data.add_subparsers(dest="data_command", required=True, metavar="TOOL")
    convert = tools.add_parser(
        "convert", help="write an image folder or .npz as sharded Parquet (image bytes + label)",
        description="Write SRC (an image folder root/<class>/<images>, a .npz with x and y, or digits) to DST as "
                    "Parquet files part-00000.parquet, ... with columns image (encoded bytes) and label, rows "
                    "shuffled so streamed chunks mix classes. SRC and DST are local paths or URIs (s3://, gs://, "
                    "...); DST must be new or empty.",
        epilog="examples:\n  raykit data convert ~/datasets/flowers/ s3://my-bucket/flowers-parquet/\n"
               "  raykit data convert train.npz data/train-parquet --rows-per-file 5000\n"
               "then train on it:  raykit train my.yaml --set data.uri=s3://my-bucket/flowers-parquet/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    convert.add_argument("src", metavar="SRC")
    convert.add_argument("dst", metavar="DST")
    convert.add_argument("--format", default="auto", choices=("auto", "image_folder", "npz", "digits"),
                         help="SRC's format (default: from the path)")
    convert.add_argument("--rows-per-file", type=int, default=10_000, help="rows per Parquet file (default 10000)")
    convert.add_argument("--rows-per-group", type=int, default=1_000,
                         help="rows per row group, the unit a streaming reader decodes at once (default 1000)")
    convert.add_argument("--seed", type=int, default=0, help="seed of the row shuffle (default 0)")
    convert.add_argument("--no-progress", action="store_true", help="no progress bar")
    convert.add_argument("--debug", action="store_true", help="show tracebacks")
    add_data_get_command(tools)


def add_data_get_command(tools) -> None:
    from raykit.data.catalog import CATALOG, DATA_HOME_ENV, DEFAULT_DATA_HOME

    get = tools.add_parser(
        "get", help="fill the local data cache with a named dataset (data.uri: cifar10)",
        description=f"Put the named dataset NAME in the local data cache, {DEFAULT_DATA_HOME}/NAME/ (or "
                    f"${DATA_HOME_ENV}/NAME/), as train.parquet, test.parquet (image bytes + label) and SOURCE.json "
                    "(where the data came from; a run names it). Without --from, downloads the official binary "
                    "release, checks its published MD5 and converts its records to PNG-encoded Parquet, rows in "
                    "the release's order. A failure leaves nothing half-written in the cache.",
        epilog="examples:\n  raykit data get cifar10                               # download (162 MB), check, convert"
               "\n  raykit data get cifar10 --from ../shared/data/cifar10  # copy a directory with train/test.parquet"
               "\n  raykit data get cifar10 --from ~/Downloads/cifar-10-binary.tar.gz"
               "\n  raykit data get cifar10 --from https://mirror.example/cifar-10-binary.tar.gz --md5 <md5>"
               "\nthen train on it:  raykit train jobs/configs/cifar10_cnn.yaml   # data.uri: cifar10",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    get.add_argument("name", metavar="NAME", choices=tuple(CATALOG), help=f"one of: {', '.join(CATALOG)}")
    get.add_argument("--from", dest="src", default=None, metavar="SRC",
                     help="an archive laid out like the official one (http(s):// or file:// URL, or a local path), or "
                          "a local directory holding train.parquet and test.parquet (default: the official URL)")
    get.add_argument("--dest", default=None, metavar="HOME",
                     help=f"the data cache to fill: the dataset goes to HOME/NAME (default: ${DATA_HOME_ENV}, else "
                          f"{DEFAULT_DATA_HOME})")
    get.add_argument("--md5", default=None, help="the archive's expected MD5 (default: the official archive's)")
    get.add_argument("--force", action="store_true", help="replace the dataset when the cache already holds it")
    get.add_argument("--no-progress", action="store_true", help="no progress bars")
    get.add_argument("--debug", action="store_true", help="show tracebacks")


def run_data(args) -> int:
    return {"convert": run_data_convert, "get": run_data_get}[args.data_command](args)


def run_data_get(args) -> int:
    from raykit.data.catalog import DATA_HOME_ENV, data_home, get

    summary = get(args.name, args.src, home=args.dest, md5=args.md5, force=args.force,
                  progress=not args.no_progress and sys.stderr.isatty())
    verb = "already holds" if summary.already_there else "wrote"
    print(f"{args.name}: {verb} {summary.directory}" + (" (--force replaces it)" if summary.already_there else ""))
    for file, (rows, size) in summary.files.items():
        print(f"  {file:<14} {rows:>7,} rows  {size / 2**20:8,.1f} MB")
    print(f"  source: {summary.source.get('source')}; images stored as {summary.source.get('encoding')}")
    home = os.path.dirname(summary.directory)
    if home != data_home():
        print(f"  data.uri: {args.name} reads it with {DATA_HOME_ENV}={home}")
    return EXIT_OK


def run_data_convert(args) -> int:
    from raykit.data.convert import convert

    summary = convert(args.src, args.dst, fmt=args.format, rows_per_file=args.rows_per_file,
                      rows_per_group=args.rows_per_group, seed=args.seed,
                      progress=not args.no_progress and sys.stderr.isatty())
    classes = f", {len(summary.class_names)} classes" if summary.class_names else ""
    print(f"wrote {summary.rows} rows{classes} to {len(summary.files)} Parquet file(s) in {args.dst} "
          f"({summary.bytes_written / 2**20:,.1f} MB)")
    return EXIT_OK


COMMANDS = {"train": run_train, "tune": run_tune, "evaluate": run_evaluate, "spec": run_spec,
            "augment-preview": run_augment_preview, "data": run_data, "report": run_report,
            "export": run_export, "predict": run_predict, "up": run_up, "down": run_down}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    return guarded(lambda: COMMANDS[args.command](args), debug=args.debug, command=["raykit", *argv])


def guarded(action, *, debug: bool, command: list[str] | None = None) -> int:
    """Run ``action``; user mistakes print one clear message (no traceback) unless ``debug``. SIGINT and
    SIGTERM end it cleanly (exit 130 and 143) with a line saying how to resume: ``command`` (the words that
    started this, default ``raykit`` + the arguments) with the run's name."""
    try:
        with interrupts.signals_raise():
            return action()
    except SpecError as exc:
        if debug:
            raise
        print(f"raykit: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DataError as exc:
        if debug:
            raise
        print(f"raykit: invalid data: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        print(interrupts.message(exc, command or ["raykit", *sys.argv[1:]]), file=sys.stderr)
        return interrupts.exit_code(exc)
    except RunFailedError as exc:  # a cause raykit names (disk full, out of memory): its message says it all
        if debug:
            raise
        print(f"raykit: run failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # the run failed: say what, and how to see more
        if debug:
            raise
        print(f"raykit: run failed: {type(exc).__name__}: {exc}\n(rerun with --debug for the traceback)",
              file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
