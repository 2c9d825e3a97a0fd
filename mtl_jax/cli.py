"""The ``mtl-jax`` command: train, eval, predict, list.

    mtl-jax train   --config experiments/configs/seed_cnn.py [--config.key=value ...] --workdir DIR [--resume]
                    [--coordinator HOST:PORT --num-processes N --process-id I | --distributed]
    mtl-jax config  --config experiments/configs/seed_cnn.py [--config.key=value ...]
    mtl-jax eval    --workdir DIR [--split test] [--checkpoint best|latest]
    mtl-jax predict --workdir DIR --output preds.csv|preds.npz [--split test | --inputs x.npz] [--checkpoint ...]
    mtl-jax compare --config experiments/configs/compare_houses.py --workdir DIR [--resume]
                    [--coordinator HOST:PORT --num-processes N --process-id I | --distributed]
    mtl-jax list

``--config.key=value`` (or ``--config.key value``) overrides a config field as ml_collections'
``config_flags`` do in Flax's examples; ``--set key=value`` is the same. ``mtl-jax config``
prints the resolved config, every field with its value and what it means.

Errors in the user's input (bad config, unknown name, unwritable or occupied workdir,
a workdir another process is writing to, a checkpoint that does not fit or is damaged,
non-finite loss) print one line ``mtl-jax: error: ...`` and exit with status 2;
``--debug`` (or ``MTL_JAX_DEBUG=1``) shows the traceback instead.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

USER_ERRORS = (ValueError, KeyError, TypeError, FileExistsError, FileNotFoundError, PermissionError,
               FloatingPointError)


def _config_arguments(parser: argparse.ArgumentParser, what: str = "config", example: str = "epochs=3") -> None:
    """``--config FILE`` and repeatable ``--set KEY=VALUE`` (``--config.key=value``)."""
    parser.add_argument("--config", required=True, help=f"Python file with get_config() (a {what})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a {what} field (repeatable), e.g. --set {example} or --config.{example}")


def _run_arguments(parser: argparse.ArgumentParser, workdir: str, resume: str) -> None:
    """``--workdir``, ``--resume`` and ``--quiet`` of the commands that train."""
    parser.add_argument("--workdir", required=True, help=workdir)
    parser.add_argument("--resume", action="store_true", help=resume)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _host_arguments(parser: argparse.ArgumentParser) -> None:
    """``--coordinator``, ``--num-processes``, ``--process-id`` and ``--distributed``."""
    hosts = parser.add_argument_group("several processes (hosts), each running this same command "
                                      "(mtl_jax/distributed.py)")
    hosts.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address, reachable from every process")
    hosts.add_argument("--num-processes", type=int, metavar="N", help="how many processes take part")
    hosts.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0 to N-1")
    hosts.add_argument("--distributed", action="store_true",
                       help="let JAX find the processes from the cluster (SLURM, Cloud TPU, ...)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtl-jax", description="Multi-task learning experiments in JAX.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a config into a workdir (or resume it)")
    _config_arguments(train)
    _run_arguments(train, "where checkpoints, logs and plots go", "continue from the latest checkpoint in the workdir")
    _host_arguments(train)
    for name, text in (("eval", "evaluate a workdir's checkpoint on a split"),
                       ("predict", "write per-task predictions to CSV or NPZ")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--workdir", required=True)
        p.add_argument("--split", default="test")
        p.add_argument("--checkpoint", choices=("best", "latest"), default="best",
                       help="the best checkpoint by best_metric (the latest when there is none), or the latest")
        if name == "predict":
            p.add_argument("--output", required=True, help="a .csv or .npz file")
            p.add_argument("--inputs", help="an .npy (or .npz with the dataset's input key) instead of a split")
    _config_arguments(sub.add_parser("config", help="print a config resolved: every field, its value and its meaning"))
    grid = sub.add_parser("compare", help="train a grid of methods x architectures x datasets x seeds and the "
                                          "single-task baselines; write results.md/csv with delta-m%%",
                          description="Trains every run of a compare config not yet finished in the workdir, then "
                                      "writes results.md/csv. Several workers (e.g. one per GPU) may run this command "
                                      "on one workdir at once: each trains the runs no other holds.")
    _config_arguments(grid, "compare config", "seeds=[0,1]")
    _run_arguments(grid, "where every run and the results table go", "continue interrupted runs and retry failed ones")
    _host_arguments(grid)
    sub.add_parser("list", help="datasets, models, weighting methods, aggregators, optimizers and schedules")
    return parser


def config_flags(argv: list[str]) -> list[str]:
    """``--config.key=value`` and ``--config.key value`` (ml_collections' style) as ``--set key=value``."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config.") and len(arg) > len("--config."):
            key, has_value, value = arg[len("--config."):].partition("=")
            if not has_value:
                if i + 1 >= len(argv):
                    raise ValueError(f"{arg} needs a value: {arg}=VALUE")
                value, i = argv[i + 1], i + 1
            out += ["--set", f"{key}={value}"]
        else:
            out.append(arg)
        i += 1
    return out


def run(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(config_flags(list(sys.argv[1:] if argv is None else argv)))
    from mtl_jax import catalog

    if args.command == "list":
        print(catalog.listing())
        return 0
    from mtl_jax.config import describe, load_config

    # Config files, overrides and registry names are read before JAX is imported: their errors answer at once.
    config = load_config(args.config, args.overrides) if args.command in ("config", "train") else None
    if config is not None:
        catalog.check_names(config)
    if args.command == "config":
        print(describe(config))
        return 0
    if args.command in ("train", "compare"):
        from mtl_jax import distributed

        distributed.initialize(args.coordinator, args.num_processes, args.process_id, auto=args.distributed)
    if args.command == "compare":
        from mtl_jax.compare import compare

        compare(args.config, args.workdir, overrides=args.overrides, resume=args.resume,
                progress=False if args.quiet else None)
        if distributed.writes_files():
            print((Path(args.workdir) / "results.md").read_text())
        return 0
    from mtl_jax import experiment

    if args.command == "train":
        results = experiment.train_and_evaluate(config, args.workdir, resume=args.resume,
                                                progress=False if args.quiet else None)
        print(json.dumps(results, indent=1))
    elif args.command == "eval":
        print(json.dumps(experiment.evaluate_run(args.workdir, args.split, args.checkpoint), indent=1))
    else:
        path = experiment.predict_run(args.workdir, args.output, split=args.split, inputs=args.inputs,
                                      which=args.checkpoint)
        print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> None:
    from mtl_jax import cpu

    cpu.enable_fast_convolutions()  # before JAX starts: XLA's multi-threaded CPU convolutions
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        code = run(argv)
    except BrokenPipeError:  # `mtl-jax list | head`: the reader left; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    except USER_ERRORS as error:
        if os.environ.get("MTL_JAX_DEBUG") or "--debug" in argv:
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"mtl-jax: error: {message}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
