"""Proof that tests not marked e2e run no DAG: LocalDagRunner.run is refused while
FORBID_ENV names a report file, and every refusal is written there.

conftest installs the guard in the test process and sets FORBID_ENV for each non-e2e test;
`tlpipe` child processes inherit it and start through `launch_cli`, which installs the guard
before the command line runs. conftest fails the test when the report file is not empty, so a
refusal that a test (or the CLI) catches still fails it. The guard waits for the runner's own
import (no TFX import of its own, so a command that never builds a DAG stays quick).
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

FORBID_ENV = "TLPIPE_TESTS_NO_DAG_REPORT"
RUNNER_MODULE = "tfx.orchestration.local.local_dag_runner"


class DagRunForbidden(AssertionError):
    """LocalDagRunner.run called by a test that is not marked e2e."""


def _guarded(run):
    def guarded_run(self, *args, **kwargs):
        report = os.environ.get(FORBID_ENV)
        if report:
            message = (f"LocalDagRunner.run in pid {os.getpid()} ({' '.join(sys.argv)}): "
                       f"a test that runs the DAG must be marked e2e")
            with open(report, "a") as fh:
                fh.write(message + "\n")
            raise DagRunForbidden(message)
        return run(self, *args, **kwargs)

    guarded_run.__wrapped__ = run
    return guarded_run


def _patch(module) -> None:
    runner = module.LocalDagRunner
    if not hasattr(runner.run, "__wrapped__"):
        runner.run = _guarded(runner.run)


class _PatchAfterExec(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _patch(module)


class _RunnerFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != RUNNER_MODULE:
            return None
        sys.meta_path.remove(self)  # let the real finders find it
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchAfterExec(spec.loader)
        return spec


def install() -> None:
    if RUNNER_MODULE in sys.modules:
        _patch(sys.modules[RUNNER_MODULE])
    elif not any(isinstance(f, _RunnerFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _RunnerFinder())


def launch_cli() -> None:
    """`python -m pipeline.cli ...`, with the guard installed first (argv after the program)."""
    import runpy

    install()
    runpy.run_module("tlpipe.pipeline.cli", run_name="__main__", alter_sys=True)
