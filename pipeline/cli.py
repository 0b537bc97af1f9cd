"""`tlpipe`: the one command line: `run` (the pipeline), `promote`, `serve` / `predict`
(serving/cli.py), `compare` / `label` (pipeline/compare.py), `runs` (pipeline/runs.py),
`schedule` (pipeline/schedule.py) and `compile` (pipeline/orchestrators.py)."""
from __future__ import annotations

import argparse
import os
import sys
import time

from tlpipe.components.config import ConfigError, PipelineConfig
from tlpipe.components.config_loading import load_config, validate
from tlpipe.pipeline.nodes import NODE_ORDER as NODES


def _fail(message: str, code: int = 2) -> int:
    print(f"tlpipe: error: {message}", file=sys.stderr)
    return code


def resolve_data_root(config: PipelineConfig, mirror: str | None) -> str:
    """The user's image root, or the flowers demo (mirror, cache, or download)."""
    if config.data.root:
        root = config.data.root
        return root if "://" in root else os.path.abspath(root)  # gs://... stays as it is
    from tlpipe.data.flowers import FlowersUnavailable, ensure_flowers

    try:
        return ensure_flowers(os.path.join(os.path.abspath(config.work_dir), "datasets"),
                              mirror=mirror or config.data.flowers_mirror,
                              progress=lambda m: print(f"tlpipe: {m}", flush=True))
    except FlowersUnavailable as err:
        raise ConfigError(str(err)) from None


def cmd_run(args: argparse.Namespace) -> int:
    if args.to and args.to not in NODES:
        return _fail(f"--to: unknown node '{args.to}' (nodes: {', '.join(NODES)})")
    try:
        config = load_config(args.config, args.set, work_dir=args.work_dir,
                             data__root=args.data)
        validate(config)
        data_root = resolve_data_root(config, args.mirror)
        validate(config, data_root)
    except ConfigError as err:
        return _fail(str(err))
    if args.if_new_data:
        from tlpipe.pipeline.runs import NO_NEW_DATA, new_data_check

        new, why = new_data_check(config, data_root)
        if not new:
            from tlpipe.pipeline.events import RUN_SKIPPED, Event, emit_to_env

            emit_to_env(Event(RUN_SKIPPED, detail=why))
            print(f"{NO_NEW_DATA} {why}", flush=True)
            return 0
        print(f"tlpipe: {why}", flush=True)
    print(f"tlpipe: data {data_root}; base {config.base.name}; work dir "
          f"{os.path.abspath(config.work_dir)}", flush=True)
    from tlpipe.pipeline.local_runner import run_pipeline
    from tlpipe.pipeline.notify import FAILED, notify, notify_outcome
    from tlpipe.pipeline.summary import latest_run_summary

    started = time.time()
    try:
        ended = run_pipeline(config, data_root, args.to, retune=args.retune)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as err:  # the node and log path were printed by the runner
        message = f"run failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        notify(config, FAILED, message)
        return _fail(message, 1)
    summary = latest_run_summary(config, ended)
    # TFX can end a node without raising (e.g. inputs it could not resolve): check each one.
    broken = [f"{e.node} ({e.state})" for e in ended if not e.ok]
    if broken:
        message = (f"run incomplete: {', '.join(broken)}; see the log under "
                   f"{os.path.abspath(config.work_dir)}/logs")
        notify(config, FAILED, message, summary)
        return _fail(message, 1)
    print(f"tlpipe: run completed in {time.time() - started:.0f}s", flush=True)
    print("\n".join(summary.lines()), flush=True)
    notify_outcome(config, summary)
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, args.set, work_dir=args.work_dir)
        validate(config)
    except ConfigError as err:
        return _fail(str(err))
    from tlpipe.pipeline.promote import PromoteError, promote

    try:
        pushed = promote(config, args.reason, args.model_id, args.by)
    except PromoteError as err:
        return _fail(str(err))
    print(f"tlpipe: FORCED release of model {pushed['model_artifact_id']} as version "
          f"{pushed['version']} at {pushed['path']} (reason recorded in metadata.json)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlpipe",
        description="Folder of labelled images -> fine-tuned, evaluated, versioned classifier "
                    "served in TF Serving's layout (TFX on LocalDagRunner).")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pipeline (all of it, or --to a node)",
                         description="Run the TFX DAG locally. Everything is written under "
                                     "--work-dir: pipeline root, ML Metadata, serving base.")
    run.add_argument("--config", help="YAML config file (see README: configuration)")
    run.add_argument("--data", help="image root laid out <root>/<class>/*.jpg "
                                    "(default: the flowers demo)")
    run.add_argument("--work-dir", help="where everything is written (default ./tlpipe-work)")
    run.add_argument("--to", metavar="NODE", help=f"run up to and including NODE: {', '.join(NODES)}")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a setting, e.g. --set trainer.phase1_epochs=3 (repeatable)")
    run.add_argument("--mirror", help="offline mirror of the flowers demo, a folder of "
                                      "<class>/*.jpg (or TLPIPE_FLOWERS_MIRROR)")
    run.add_argument("--retune", action="store_true",
                     help="tune now, even when tuner.retune_every says to reuse earlier values")
    run.set_defaults(func=cmd_run)

    promote = sub.add_parser(
        "promote", help="force-release a trained model the gate did not bless",
        description="Push a trained model without a blessing (the rare forced release). "
                    "The version's metadata.json records who and why.")
    promote.add_argument("--reason", required=True, help="why the gate is overridden")
    promote.add_argument("--model-id", type=int,
                         help="ML Metadata id of the Model artifact (default: the latest trained)")
    promote.add_argument("--by", help="who releases it (default: the current user)")
    promote.add_argument("--config", help="YAML config file")
    promote.add_argument("--work-dir", help="the run's work dir (default ./tlpipe-work)")
    promote.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    promote.set_defaults(func=cmd_promote)

    from tlpipe.serving.cli import register as register_serving  # serve, predict

    register_serving(sub)
    from tlpipe.pipeline.compare import register as register_compare  # compare, label

    register_compare(sub)
    from tlpipe.pipeline.orchestrators import register as register_compile  # compile
    from tlpipe.pipeline.runs import register as register_runs  # runs; run --if-new-data
    from tlpipe.pipeline.schedule import register as register_schedule  # schedule

    register_schedule(sub)
    register_runs(sub)
    register_compile(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up chatter
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
