"""The production orchestrators' entry points over the same `create_pipeline`: the Kubeflow V2
pipeline spec (`tlpipe compile --kubeflow`), and the Airflow DAG file, built here against a
stand-in `airflow` package (Airflow itself is not installed).

Both build the DAG in this process (a child would spend ~15 s of CPU importing TFX first); the
refusals below, and test_cli.py, run `tlpipe compile` as a real child."""
from __future__ import annotations

import datetime as dt
import importlib
import json
import sys
import textwrap

import pytest
import yaml
from conftest import tlpipe
from tlpipe.components.config_loading import load_config
from tlpipe.pipeline.nodes import NODE_ORDER
from tlpipe.pipeline.timing import airflow_schedule_interval


def _has_every_node(task_ids) -> bool:
    """Every DAG node is a task (a Resolver may compile to one task per input channel)."""
    return all(any(t == n or t.startswith(n + "-") for t in task_ids) for n in NODE_ORDER)


@pytest.fixture
def ram_work_dir():
    """TensorFlow's in-process ram:// stands in for gs://: the wheels are built into it, as they
    would be uploaded to the bucket; removed afterwards, as they would vanish with a child."""
    import tensorflow as tf

    yield "ram://kf/work"
    if tf.io.gfile.exists("ram://kf"):
        tf.io.gfile.rmtree("ram://kf")


def test_kubeflow_v2_spec_has_every_component(tmp_path, tiny_images, ram_work_dir, tlpipe_in_process):
    out = tmp_path / "spec" / "tlpipe.json"
    result = tlpipe_in_process("compile", "--kubeflow", str(out), "--data", str(tiny_images),
                               "--work-dir", ram_work_dir, "--image", "registry.example/tlpipe:1",
                               "--set", "beam.extra_args=[--temp_location=gs://bucket/tmp]")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"wrote the Kubeflow V2 pipeline spec {out}" in result.stdout
    text = out.read_text()
    assert str(tmp_path / "spec") not in text and "/tmp/tlpipe" not in text  # nothing on this disk
    assert "ram://kf/work/pipeline/_wheels/tfx_user_code_trainer" in text  # module wheels
    assert "ram://kf/work/serving/flowers" in text
    spec = json.loads(text)["pipelineSpec"]
    assert spec["pipelineInfo"]["name"] == "tlpipe"
    tasks = spec["root"]["dag"]["tasks"]
    assert _has_every_node(tasks), sorted(tasks)
    executors = spec["deploymentSpec"]["executors"]
    images = {e["container"]["image"] for e in executors.values() if "container" in e}
    assert images == {"registry.example/tlpipe:1"}  # resolvers run no container
    component = spec["components"][tasks["ingest"]["componentRef"]["name"]]
    ingest = executors[component["executorLabel"]]["container"]
    assert "--temp_location=gs://bucket/tmp" in ingest["args"]  # Beam args from the config
    assert "tlpipe.components.ingest.executor" in " ".join(ingest["args"])


def test_compile_needs_a_data_root_the_cluster_sees(tmp_path):
    result = tlpipe("compile", "--kubeflow", str(tmp_path / "x.json"), "--work-dir",
                    "gs://b/w", "--image", "tlpipe:1")
    assert result.returncode == 2 and "--data gs://bucket/images" in result.stderr


def test_compile_refuses_local_locations_and_several_spans(tmp_path):
    from tlpipe.components.config import ConfigError
    from tlpipe.pipeline.orchestrators import check_kubeflow

    local = load_config(None, ["data.root=gs://b/images"], work_dir=str(tmp_path))
    try:
        check_kubeflow(local)
        raise AssertionError("a local work dir compiled")
    except ConfigError as err:
        assert f"pipeline root {tmp_path}/pipeline" in str(err) and "--work-dir gs://" in str(err)
    spans = load_config(None, ["data.root=gs://b/images", "data.pattern=span-{SPAN}/*/*",
                               "data.num_spans=3"], work_dir="gs://b/w")
    result = tlpipe("compile", "--kubeflow", str(tmp_path / "x.json"), "--image", "tlpipe:1",
                    "--work-dir", "gs://b/w", "--data", "gs://b/images",
                    "--set", "data.pattern=span-{SPAN}/*/*", "--set", "data.num_spans=3")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "data.num_spans=3 cannot run on Kubeflow" in result.stderr
    assert not (tmp_path / "x.json").exists()
    check_kubeflow(spans.replace(data=spans.data.replace(num_spans=1)))  # one span compiles


def test_airflow_schedule_interval_from_the_config():
    assert airflow_schedule_interval(load_config(None, ["schedule.every=6h"])) \
        == dt.timedelta(hours=6)
    assert airflow_schedule_interval(load_config(None, ["schedule.cron=0 3 * * *"])) \
        == "0 3 * * *"


_FAKE_AIRFLOW = {
    "airflow/__init__.py": "",
    "airflow/models.py": """
        class DAG:
            def __init__(self, dag_id, **kwargs):
                self.dag_id, self.kwargs, self.tasks = dag_id, kwargs, []
    """,
    "airflow/operators/__init__.py": "",
    "airflow/operators/python_operator.py": """
        class PythonOperator:
            def __init__(self, task_id, python_callable, op_kwargs, dag, **kwargs):
                self.task_id, self.upstream = task_id, set()
                dag.tasks.append(self)

            def set_upstream(self, other):
                self.upstream.add(other.task_id)
    """,
}


# What importing the DAG file loads on top of the stand-in: forgotten afterwards, so no later
# import in this process sees TFX's Airflow runner bound to the stand-in.
_AIRFLOW_MODULES = ("airflow", "tfx.orchestration.airflow", "tlpipe.pipeline.airflow_dag")


def _forget_airflow_modules() -> None:
    for name in [m for m in sys.modules if m.startswith(_AIRFLOW_MODULES)]:
        del sys.modules[name]


@pytest.fixture
def fake_airflow(tmp_path, monkeypatch):
    """The stand-in `airflow` package, first on sys.path while the test runs."""
    for name, text in _FAKE_AIRFLOW.items():
        (tmp_path / "fake" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "fake" / name).write_text(textwrap.dedent(text))
    _forget_airflow_modules()
    monkeypatch.syspath_prepend(str(tmp_path / "fake"))
    yield
    _forget_airflow_modules()


def test_airflow_dag_file_builds_every_component_with_the_schedule(tmp_path, tiny_images, fake_airflow,
                                                                    monkeypatch):
    config = tmp_path / "tlpipe.yaml"
    config.write_text(yaml.safe_dump({"data": {"root": str(tiny_images)},
                                      "work_dir": str(tmp_path / "work"),
                                      "schedule": {"cron": "0 3 * * *"}}))
    monkeypatch.setenv("TLPIPE_CONFIG", str(config))
    module = importlib.import_module("tlpipe.pipeline.airflow_dag")  # as Airflow loads a DAG file
    stand_in = sys.modules["airflow.models"]
    assert stand_in.__file__.startswith(str(tmp_path / "fake")) and isinstance(module.DAG, stand_in.DAG)
    dag = {"dag_id": module.DAG.dag_id, "kwargs": {k: str(v) for k, v in module.DAG.kwargs.items()},
           "tasks": {t.task_id: sorted(t.upstream) for t in module.DAG.tasks}}
    assert dag["dag_id"] == "tlpipe"
    assert dag["kwargs"]["schedule_interval"] == "0 3 * * *"
    assert dag["kwargs"]["catchup"] == "False" and dag["kwargs"]["max_active_runs"] == "1"
    assert set(dag["tasks"]) == set(NODE_ORDER)
    assert "transform" in dag["tasks"]["trainer"] and "trainer" in dag["tasks"]["pusher"]
