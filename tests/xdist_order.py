"""How the suite is spread over pytest-xdist workers (`make test`: `-n 2 --dist loadfile`).

Each module runs whole on one worker (its module fixtures are built once), and the modules that
read the session's DAG runs (SHARED_DAG_MODULES) form one unit, so those runs are made once.
Units are handed out longest first (a worker asks for the next one when it is nearly idle), so
no worker is left alone with a long unit at the end: xdist's own order (most tests first) sent
single-test DAG modules last. The lengths are measured CPU seconds per module; a stale or
missing entry only makes the schedule worse, never a test wrong.
"""
from __future__ import annotations

from pathlib import Path

# The modules whose e2e tests read the session's DAG runs: under xdist they form one unit of work.
SHARED_DAG_MODULES = {"test_pipeline_e2e.py", "test_compare.py", "test_honest_e2e.py"}
SHARED_UNIT = "shared DAG runs"

# CPU seconds per module (self + children), from a profiled `make test` on the 2-core machine
# (2026-11-28); modules under ~4 s are left out (they go last, in file order).
MODULE_CPU_SECONDS = {
    "test_compare.py": 242, "test_schedule.py": 224, "test_metadata_mysql.py": 123,
    "test_honest_e2e.py": 98, "test_pipeline_e2e.py": 83, "test_storage_e2e.py": 63,
    "test_tuner.py": 34, "test_trainer.py": 25, "test_distribution.py": 24,
    "test_ingest_label_domain.py": 23, "test_nonfinite_model.py": 20, "test_run_lock.py": 18,
    "test_serving_reload.py": 18, "test_abandoned_runs.py": 17, "test_dag_guard.py": 15,
    "test_efficientnet_lite.py": 9, "test_base_layers.py": 8, "test_serving_cli.py": 8,
    "test_serving_grpc.py": 7, "test_ingest_executor.py": 7, "test_serving_hostile.py": 6,
    "test_serving_server.py": 6, "test_imports.py": 5, "test_ingest_pipeline.py": 5,
    "test_kubeflow_compile.py": 5, "test_serving_rest.py": 5, "test_beam_args.py": 5,
    "test_cli.py": 4, "test_evaluator_metrics.py": 4,
}


def unit_of(path: Path) -> str:
    return SHARED_UNIT if path.name in SHARED_DAG_MODULES else str(path)


def longest_units_first(items: list) -> None:
    """Sorts `items` (in place) by their unit's measured length, longest first; each module
    keeps its own order (module fixtures such as a MariaDB server are shared in it)."""
    length: dict[str, float] = {}
    for path in {item.path for item in items}:
        unit = unit_of(path)
        length[unit] = length.get(unit, 0) + MODULE_CPU_SECONDS.get(path.name, 0)
    items.sort(key=lambda item: -length[unit_of(item.path)])  # stable


def make_scheduler(config, log):
    """`--dist loadfile` with SHARED_DAG_MODULES as one unit, units sent in collection order."""
    from xdist.scheduler import LoadFileScheduling

    class LongestUnitsFirst(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(Path(nodeid.split("::", 1)[0]))

    config.option.loadscopereorder = False  # keep longest_units_first's order
    return LongestUnitsFirst(config, log)
