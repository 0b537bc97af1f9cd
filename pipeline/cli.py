"""`tlpipe`: the one command line, every parser in one place.

Pipeline commands (pipeline/commands.py): `run`, `runs`, `compare`, `schedule`, `compile`,
`config`, and the serving-layout actions `promote` and `label`. `serve` / `predict` follow TF Serving's own
flags (serving/cli.py). Commands that read the config share one parent for `--config`,
`--work-dir` and `--set`; every listing takes `--format {table,json}` (`--json` for short).
Errors: one line from `main`; exit 2 for usage or settings (nothing ran), 1 for a failed run.
"""
from __future__ import annotations

import argparse
import os
import sys

from tlpipe.components.errors import TlpipeError
from tlpipe.pipeline import commands
from tlpipe.pipeline.nodes import NODE_ORDER
from tlpipe.pipeline.work_dir_lock import wait_seconds

LISTING_FORMATS = ("table", "json")
SERVING_LABELS = ("stable", "canary")


def _shared_parents() -> dict[str, argparse.ArgumentParser]:
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--config", help="YAML config file (see docs/configuration.md)")
    config.add_argument("--work-dir", help="where everything is written (default ./tlpipe-work)")
    config.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. --set trainer.phase1_epochs=3 (repeatable)")
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--data", help="image root laid out <root>/<class>/*.jpg (default: the flowers demo)")
    mirror = argparse.ArgumentParser(add_help=False)
    mirror.add_argument("--mirror", help="offline mirror of the flowers demo, a folder of <class>/*.jpg "
                                         "(or TLPIPE_FLOWERS_MIRROR)")
    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--model", help="model name under the serving dir (default: model_name)")
    return {"config": config, "data": data, "mirror": mirror, "model": model}


def _add_format(parser: argparse.ArgumentParser, formats: tuple[str, ...] = LISTING_FORMATS) -> None:
    parser.add_argument("--format", choices=formats, default="table", help="output format (default table)")
    parser.add_argument("--json", dest="format", action="store_const", const="json",
                        help="same as --format json")


def _pipeline_commands(sub, parents: dict[str, argparse.ArgumentParser]) -> None:
    def command(name: str, func, shared: tuple[str, ...], **kwargs) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, parents=[parents[p] for p in shared], **kwargs)
        parser.set_defaults(func=func)
        return parser

    run = command("run", commands.cmd_run, ("config", "data", "mirror"),
                  help="run the pipeline (all of it, or --to a node)",
                  description="Run the TFX DAG locally. Everything is written under --work-dir: "
                              "pipeline root, ML Metadata, serving base.")
    run.add_argument("--to", metavar="NODE", help=f"run up to and including NODE: {', '.join(NODE_ORDER)}")
    run.add_argument("--wait", type=wait_seconds, default=0.0, metavar="SECONDS",
                     help="wait up to SECONDS for another run on this work dir to end (default: refuse)")
    run.add_argument("--retune", action="store_true",
                     help="tune now, even when tuner.retune_every says to reuse earlier values")
    run.add_argument("--if-new-data", action="store_true",
                     help="exit 0 at once when no span newer than the last complete run's is on disk "
                          "(for system cron, a Kubernetes CronJob, `tlpipe schedule`)")

    runs = command("runs", commands.cmd_runs, ("config",), help="run history from ML Metadata",
                   description="One line per pipeline run, oldest first: start, duration, status, "
                               "data span, accuracy, blessed, pushed version, hyperparameters "
                               "(tuned by the run or reused).")
    runs.add_argument("--last", type=int, default=20, metavar="N", help="show the last N runs (default 20)")
    _add_format(runs)

    compare = command("compare", commands.cmd_compare, ("config", "model"),
                      help="compare trained versions by their evaluation metrics",
                      description="Every trained version (ML Metadata and the serving dir), one row "
                                  "each; with exactly two --versions, a head to head with McNemar's "
                                  "exact test on the same eval examples.")
    compare.add_argument("--versions", nargs="+", metavar="V",
                         help="serving versions (3) or ML Metadata model ids (m17); two give a head "
                              "to head, the second compared with the first")
    _add_format(compare, (*LISTING_FORMATS, "html"))
    compare.add_argument("--out", help="html: report folder (default <work-dir>/compare)")
    compare.add_argument("--no-paired-test", action="store_true",
                         help="head to head without re-running both models on the eval split")

    promote = command("promote", commands.cmd_promote, ("config",),
                      help="force-release a trained model the gate did not bless",
                      description="Push a trained model without a blessing (the rare forced "
                                  "release). The version's metadata.json records who and why.")
    promote.add_argument("--reason", required=True, help="why the gate is overridden")
    promote.add_argument("--model-id", type=int,
                         help="ML Metadata id of the Model artifact (default: the latest trained)")
    promote.add_argument("--by", help="who releases it (default: the current user)")

    label = command("label", commands.cmd_label, ("config", "model"),
                    help="point a serving label (stable, canary) at a version",
                    description="Writes the label to labels.json (read by tlpipe serve) and to the "
                                "ModelServerConfig models.config beside the model dirs (TF "
                                "Serving's --model_config_file).")
    label.add_argument("--version", type=int, required=True)
    label.add_argument("--label", choices=SERVING_LABELS, required=True)

    schedule = command("schedule", commands.cmd_schedule, ("config", "data", "mirror"),
                       help="run the pipeline on a schedule (embedded scheduler)",
                       description="Run `tlpipe run --if-new-data` now and then at each tick "
                                   "(schedule.every or schedule.cron), until Ctrl-C / SIGTERM, which "
                                   "stop after the current component and never mid-push. One "
                                   "scheduler per work dir (a lock file).")
    when = schedule.add_mutually_exclusive_group()
    when.add_argument("--every", help="interval: 30m, 6h, 1d (default: schedule.every)")
    when.add_argument("--cron", help="5-field cron expression, local time, e.g. '0 3 * * *'")
    schedule.add_argument("--always", action="store_true",
                          help="run at every tick, not only when a new span arrived")
    schedule.add_argument("--max-runs", type=int, metavar="N",
                          help="stop after N ticks (default: run until stopped)")

    compile_ = command("compile", commands.cmd_compile, ("config", "data"),
                       help="compile the pipeline for Kubeflow Pipelines / Vertex AI",
                       description="Compile the same DAG with TFX's KubeflowV2DagRunner to a pipeline "
                                   "spec JSON (upload it to Kubeflow Pipelines or Vertex AI Pipelines "
                                   "and schedule recurring runs there). Needs the kfp package "
                                   "(requirements-kfp.lock). --data: the images as the cluster sees "
                                   "them (gs://...).")
    compile_.add_argument("--kubeflow", required=True, metavar="FILE",
                          help="where to write the pipeline spec JSON")
    compile_.add_argument("--image", required=True,
                          help="container image with tlpipe installed, as the cluster pulls it")


def _config_command(sub, parents: dict[str, argparse.ArgumentParser]) -> None:
    config = sub.add_parser("config", parents=[parents["config"]], help="print the effective settings",
                            description="The validated settings of --config and --set, as YAML; with "
                                        "--markdown, the configuration reference (docs/configuration.md).")
    config.add_argument("--markdown", action="store_true",
                        help="print the configuration reference generated from components/config.py")
    config.set_defaults(func=commands.cmd_config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlpipe",
        description="Folder of labelled images -> fine-tuned, evaluated, versioned classifier "
                    "served in TF Serving's layout (TFX on LocalDagRunner).")
    sub = parser.add_subparsers(dest="command", required=True)
    parents = _shared_parents()
    _pipeline_commands(sub, parents)
    _config_command(sub, parents)
    from tlpipe.serving.cli import register as register_serving  # serve, predict: TF Serving's flags

    register_serving(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up chatter
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TlpipeError as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"tlpipe: error: {message}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("tlpipe: error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
