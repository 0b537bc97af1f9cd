"""Airflow DAG file: the same `create_pipeline`, on TFX's AirflowDagRunner, scheduled by Airflow
with `schedule.cron` (or `schedule.every` as an interval).

Not run in this project's environment (Airflow is not installed in .venv). To use it: install
TFX's Airflow extra's Airflow (`pip install "apache-airflow<3"`, the range tfx 1.21 declares)
beside tlpipe, put this file (or a symlink) in Airflow's dags folder, and point TLPIPE_CONFIG
at a YAML config that sets `data.root` and `work_dir` (paths every Airflow worker reaches).
Each component becomes one Airflow task; ML Metadata stays the SQLite file under the work dir.
"""
import datetime
import os

from tfx.orchestration.airflow.airflow_dag_runner import AirflowDagRunner, AirflowPipelineConfig
from tlpipe.components.config import ConfigError
from tlpipe.components.config_loading import load_config, validate
from tlpipe.pipeline.pipeline import create_pipeline
from tlpipe.pipeline.timing import airflow_schedule_interval

_config = load_config(os.environ.get("TLPIPE_CONFIG"))
validate(_config)
if not _config.data.root:
    raise ConfigError("the Airflow DAG needs data.root in the TLPIPE_CONFIG file")

# Airflow finds DAGs by module-level name.
DAG = AirflowDagRunner(AirflowPipelineConfig({
    "schedule_interval": airflow_schedule_interval(_config),
    "start_date": datetime.datetime(2024, 1, 1),
    "catchup": False,  # missed ticks are not replayed: the next run takes the latest span
    "max_active_runs": 1,  # no overlapping runs on one pipeline root
})).run(create_pipeline(_config, _config.data.root))
