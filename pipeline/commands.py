"""What each `tlpipe` subcommand does, given its parsed arguments (the parsers: pipeline/cli.py).

Each command reads its config through `config_from` (file, `--set`, flags; validated once) and
raises a TlpipeError for anything it refuses; `main` prints that as one line and exits with
the error's code (2: usage or settings, nothing ran; 1: a run or action failed).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from tlpipe.components import storage
from tlpipe.components.config import PipelineConfig
from tlpipe.components.config_loading import check_data_tree, load_config, validate
from tlpipe.components.errors import TlpipeError, UsageError
from tlpipe.pipeline.nodes import NODE_ORDER
from tlpipe.pipeline.work_dir_lock import WorkDirLock


class RunFailed(TlpipeError):
    """A run that started and did not complete (the node and log were reported)."""


def config_from(args: argparse.Namespace, runs_here: bool = True) -> PipelineConfig:
    """The validated config of a command: YAML file, then `--set`, then `--work-dir`/`--data`.
    `runs_here=False`: a pipeline compiled for elsewhere (see `validate`)."""
    config = load_config(args.config, args.set, work_dir=args.work_dir,
                         data__root=getattr(args, "data", None))
    validate(config, runs_here)
    return config


def cmd_run(args: argparse.Namespace) -> int:
    from tlpipe.data.root import resolve_data_root

    if args.to and args.to not in NODE_ORDER:
        raise UsageError(f"--to: unknown node '{args.to}' (nodes: {', '.join(NODE_ORDER)})")
    config = config_from(args)
    data_root = resolve_data_root(config, args.mirror)
    check_data_tree(config, data_root)
    with WorkDirLock(config.local_dir, "run", wait_seconds=args.wait) as lock:  # one run per work dir
        from tlpipe.pipeline.abandoned import abandon_dead_runs

        for abandoned in abandon_dead_runs(config, str(lock.path)):  # before the DAG starts
            print(abandoned.line(), flush=True)
        return _run(args, config, data_root)


def _run(args: argparse.Namespace, config: PipelineConfig, data_root: str) -> int:
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
          f"{storage.absolute(config.work_dir)}", flush=True)
    from tlpipe.pipeline.local_runner import run_pipeline
    from tlpipe.pipeline.notify import FAILED, notify, notify_outcome
    from tlpipe.pipeline.summary import latest_run_summary

    started = time.time()
    try:
        ended = run_pipeline(config, data_root, args.to, retune=args.retune)
    except KeyboardInterrupt:
        raise
    except Exception as err:  # the node and log path were printed by the runner
        message = f"run failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        notify(config, FAILED, message)
        raise RunFailed(message) from None
    summary = latest_run_summary(config, ended)
    # TFX can end a node without raising (e.g. inputs it could not resolve): check each one.
    broken = [f"{e.node} ({e.state})" for e in ended if not e.ok]
    if broken:
        message = (f"run incomplete: {', '.join(broken)}; see the log under "
                   f"{config.logs_dir}")
        notify(config, FAILED, message, summary)
        raise RunFailed(message)
    print(f"tlpipe: run completed in {time.time() - started:.0f}s", flush=True)
    print("\n".join(summary.lines()), flush=True)
    notify_outcome(config, summary)
    return 0


# ---------------------------------------------------------------- serving-layout actions

def cmd_promote(args: argparse.Namespace) -> int:
    from tlpipe.pipeline.promote import promote

    config = config_from(args)
    with WorkDirLock(config.local_dir, "promote"):
        pushed = promote(config, args.reason, args.model_id, args.by)
    print(f"tlpipe: FORCED release of model {pushed['model_artifact_id']} as version "
          f"{pushed['version']} at {pushed['path']} (reason recorded in metadata.json)")
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    config = config_from(args)
    model_dir = os.path.join(config.serving_base, args.model or config.model_name)
    try:
        with WorkDirLock(config.local_dir, "label"):
            from tlpipe.serving import layout  # imports TensorFlow (seconds): not before the lock says go

            path = layout.set_label(model_dir, args.label, args.version)
    except ValueError as err:  # no such version
        raise UsageError(str(err)) from None
    labels = ", ".join(f"{k}={v}" for k, v in sorted(layout.read_labels(model_dir).items()))
    print(f"tlpipe: {args.label} -> version {args.version} of {os.path.basename(model_dir)} "
          f"({labels}); written to {os.path.join(model_dir, layout.LABELS_FILE)} and {path}")
    return 0


# ---------------------------------------------------------------- listings

def cmd_compare(args: argparse.Namespace) -> int:
    config = config_from(args)
    from tlpipe.pipeline.compare import gather, head_to_head, select
    from tlpipe.pipeline.compare_report import head_to_head_lines, table_lines

    rows = select(gather(config, args.model), args.versions)
    if not rows:
        raise TlpipeError(f"no trained version under {config.work_dir}: run the pipeline first")
    h2h = (head_to_head(*rows, paired=not args.no_paired_test)
           if args.versions and len(rows) == 2 else None)
    if args.format == "json":
        print(json.dumps({"versions": [r.to_dict() for r in rows], "head_to_head": h2h},
                         indent=2, sort_keys=True))
        return 0
    print("\n".join(table_lines(rows)))
    if h2h:
        print("\n".join(head_to_head_lines(h2h)))
    if args.format == "html":
        from tlpipe.pipeline.compare_report import write_report

        out = args.out or os.path.join(config.local_dir, "compare")
        print(f"report: {write_report(rows, h2h, out)} (charts as PNG beside it)")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from tlpipe.pipeline.runs import history_lines, run_history

    config = config_from(args)
    records = run_history(config, args.last)
    if args.format == "json":
        print(json.dumps([r.to_dict() for r in records], indent=2))
    elif not records:
        print(f"tlpipe: no runs recorded in {config.metadata_description}")
    else:
        print("\n".join(history_lines(records)))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.markdown:
        from tlpipe.components.config_reference import markdown

        print(markdown(), end="")
        return 0
    import yaml

    print(yaml.safe_dump(config_from(args).to_dict(), sort_keys=False), end="")
    return 0


# ---------------------------------------------------------------- orchestration

def scheduled_command(args: argparse.Namespace) -> list[str]:
    """The scheduler's child: the real `tlpipe run`, with this scheduler's options."""
    command = [sys.executable, "-m", "tlpipe.pipeline.cli", "run"]
    if not args.always:
        command.append("--if-new-data")
    for flag in ("config", "data", "work_dir", "mirror"):
        value = getattr(args, flag)
        if value:
            command += [f"--{flag.replace('_', '-')}", value]
    for item in args.set:
        command += ["--set", item]
    return command


def cmd_schedule(args: argparse.Namespace) -> int:
    from tlpipe.pipeline.schedule import Scheduler
    from tlpipe.pipeline.timing import next_tick

    config = config_from(args)
    cron = args.cron or (None if args.every else config.schedule.cron)
    timing = next_tick(args.every or config.schedule.every, cron)

    def killed(message: str) -> None:  # `tlpipe run` alerts on its own failures, not on a kill
        from tlpipe.pipeline.notify import FAILED, notify

        notify(config, FAILED, message)

    scheduler = Scheduler(config.local_dir, scheduled_command(args), timing, first_now=not cron,
                          max_runs=args.max_runs, on_killed=killed)
    when = f"cron '{cron}'" if cron else f"every {args.every or config.schedule.every}"
    scheduler.say(f"{when}; work dir {storage.absolute(config.work_dir)}")
    return scheduler.serve()


def cmd_compile(args: argparse.Namespace) -> int:
    config = config_from(args, runs_here=False)
    from tlpipe.data.root import resolve_data_root
    from tlpipe.pipeline.orchestrators import check_kubeflow, compile_kubeflow

    check_kubeflow(config)
    spec = compile_kubeflow(config, resolve_data_root(config), args.kubeflow, args.image)
    tasks = spec.get("pipelineSpec", spec).get("root", {}).get("dag", {}).get("tasks", {})
    print(f"tlpipe: wrote the Kubeflow V2 pipeline spec {os.path.abspath(args.kubeflow)} "
          f"({len(tasks)} tasks: {', '.join(tasks)}; image {args.image}; pipeline root "
          f"{config.pipeline_root})")
    return 0
