"""The guard that keeps the DAG out of tests not marked e2e (`make test-fast`) does refuse it:
in the test process, and in a `tlpipe run` child. Each test points the guard at a report file
of its own, so the refusals it provokes do not fail it."""
import os

import dag_guard
import pytest
from conftest import tlpipe


def test_local_dag_runner_is_refused_in_the_test_process(tmp_path, monkeypatch):
    from tfx import v1 as tfx

    report = tmp_path / "report"
    monkeypatch.setenv(dag_guard.FORBID_ENV, str(report))
    with pytest.raises(dag_guard.DagRunForbidden, match="must be marked e2e"):
        tfx.orchestration.LocalDagRunner().run(None)
    assert "LocalDagRunner.run in pid" in report.read_text()


def test_tlpipe_run_child_is_refused_before_any_node_runs(tmp_path, tiny_images):
    report = tmp_path / "report"
    result = tlpipe("run", "--data", str(tiny_images), "--work-dir", str(tmp_path / "w"),
                    env={**os.environ, dag_guard.FORBID_ENV: str(report)}, timeout=300)
    assert result.returncode != 0, result.stdout
    assert "must be marked e2e" in report.read_text()
    assert not (tmp_path / "w" / "pipeline" / "ingest").exists()  # no node ran
