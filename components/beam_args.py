"""Beam pipeline arguments: how `beam.extra_args` is read, and what the process running the
in-process runner needs: TFX's packaging for remote workers skipped (skip_tfx_packaging_in_process),
and the one Beam 2.77 defect that the DirectRunner's `multi_threading` mode needs worked around.

The defect (found reproducing ingest's lost elements, bench data 450 images of ~300 KB, 2
workers: 1 to 7 lost per run, always between a stage's output and the next stage's input):
`multi_threading` runs its SDK harnesses embedded, and Beam's FnApiRunner gives them a
1000 ms data-buffer time limit that 0 cannot turn off (`config.get(...) or 1000`,
fn_api_runner/worker_handlers.py). Each output stream is then a
`TimeBasedBufferingClosableOutputStream` whose timer thread flushes with `get()` then `_clear()`
under a lock the bundle thread never takes when it encodes into the same stream; the flush
callback can block on the bounded send queue, so an element written between the two calls is
dropped with no error. Separate-process harnesses (`multi_processing`, Flink or Dataflow with
`--environment_type=PROCESS`/`EXTERNAL`) use size-based flushing from the bundle thread only,
unless `--experiments=data_buffer_time_limit_ms=N` is given: tlpipe refuses that experiment.
"""
from __future__ import annotations

import shlex
from typing import Any

TIME_FLUSH_EXPERIMENT = "data_buffer_time_limit_ms"
# Beam 2.77's DirectRunner first hands a pipeline to its Prism runner, downloading the Prism
# executable from GitHub (direct_runner.py, _PrismRunnerSupportVisitor); offline that fails and
# it falls back to the FnApiRunner. Naming the in-process runner skips the download, so a run
# behaves the same online and offline and never executes a fetched binary.
IN_PROCESS_RUNNER = "--runner=FnApiRunner"


def with_runner(args: list[str]) -> list[str]:
    """`args`, with the in-process runner unless they name a runner themselves."""
    names_runner = any(a == "--runner" or a.startswith("--runner=") for a in args)
    return list(args) if names_runner else [IN_PROCESS_RUNNER, *args]


def split_extra_args(value: Any) -> Any:
    """`beam.extra_args` as a list of arguments. A string (from `--set`) is split like a shell
    command line, never on commas, so `--experiments=a,b` stays one argument. In a list, an item
    that is not a flag is only allowed as the value of a preceding bare flag (`--runner`,
    `FlinkRunner`): after a `--k=v` item it is what YAML's `[..]` made of a comma inside a value."""
    if isinstance(value, str):
        value = shlex.split(value)
    if not isinstance(value, list):
        return value
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ValueError(f"item {item!r} is not a string")
        if not item.startswith("-") and (i == 0 or "=" in value[i - 1]):
            raise ValueError(
                f"item {item!r} is not a --flag: YAML's [a,b] splits at commas, so quote an "
                f"argument holding one ('--experiments=a,b') or use one item per line")
        if TIME_FLUSH_EXPERIMENT in item:
            raise ValueError(f"{item!r}: Beam's time-based data flushing drops elements under "
                             f"concurrent bundles (see components/beam_args.py)")
    return value


def guard_multi_threading() -> None:
    """Turns off the embedded harness's periodic flush thread in this process (idempotent), so
    streams flush only by size from the bundle thread, as separate-process harnesses do.
    Called wherever the `multi_threading` arguments are built, before any pipeline runs."""
    from apache_beam.runners.worker import data_plane

    stream = data_plane.TimeBasedBufferingClosableOutputStream
    if getattr(stream, "_tlpipe_no_timer", False):
        return
    stream._schedule_periodic_flush = lambda self: None
    stream._tlpipe_no_timer = True


def skip_tfx_packaging_in_process() -> None:
    """TFX's Beam executors, given no dependency flag, repackage the installed TFX for remote
    Beam workers (tfx/utils/dependency_utils.py: a 51 MB copy and a `setup.py sdist`, ~2 s per
    Beam node) and never delete the copy from the temp dir. The in-process runner has no remote
    workers: for its arguments that step is skipped in this process (idempotent); any other
    runner's arguments still get TFX's package."""
    from tfx.utils import dependency_utils

    tfx_flags = dependency_utils.make_beam_dependency_flags
    if getattr(tfx_flags, "_tlpipe_in_process_aware", False):
        return

    def make_beam_dependency_flags(beam_pipeline_args: list[str]) -> list[str]:
        if IN_PROCESS_RUNNER in beam_pipeline_args:
            return list(beam_pipeline_args)
        return tfx_flags(beam_pipeline_args)

    make_beam_dependency_flags._tlpipe_in_process_aware = True
    dependency_utils.make_beam_dependency_flags = make_beam_dependency_flags
