"""ML Metadata on a real MariaDB server (Debian's package, started by the fixture): the one
opener reads what TFX writes there, the DAG runs twice with caching and the blessed baseline,
`tlpipe runs` and `compare` read the same store, and the password stays out of every log."""
import json
import os
import re

import pytest
import yaml
from conftest import PLUMBING_SETTINGS, settings_args, tlpipe
from mariadb_server import start
from tlpipe.components.config_loading import load_config
from tlpipe.pipeline.lineage import Lineage, connection_config

PASSWORD_ENV = "TLPIPE_TEST_MLMD_PASSWORD"


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory):
    server = start(tmp_path_factory.mktemp("mariadb"))
    yield server
    server.stop()


def _config_file(tmp_path, server, work) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"work_dir": str(work), "metadata": {"mysql": {
        "host": "127.0.0.1", "port": server.port, "database": server.database, "user": server.user,
        "password_env": PASSWORD_ENV}}}))
    return str(path)


def test_the_one_opener_reads_a_mysql_store(mariadb, tmp_path, monkeypatch):
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2 as mlmd

    monkeypatch.setenv(PASSWORD_ENV, mariadb.password)
    config = load_config(_config_file(tmp_path, mariadb, tmp_path / "work"))
    writer = metadata_store.MetadataStore(connection_config(config))
    run_type = writer.put_context_type(mlmd.ContextType(name="pipeline_run"))
    [run_id] = writer.put_contexts([mlmd.Context(type_id=run_type, name="run-1")])
    lineage = Lineage.open(config)
    assert [c.name for c in lineage.runs()] == ["run-1"] and run_id > 0
    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    with pytest.raises(RuntimeError, match="mysql_real_connect failed"):
        Lineage.open(config)


@pytest.mark.e2e
def test_dag_twice_on_mariadb_with_caching_baseline_runs_and_compare(mariadb, tmp_path, tiny_images):
    work = tmp_path / "work"
    config = _config_file(tmp_path, mariadb, work)
    env = {**os.environ, PASSWORD_ENV: mariadb.password}
    # This test is about the store, not the model (a gate any model meets): the first model is
    # blessed and is the baseline.
    args = ["run", "--config", config, "--data", str(tiny_images), *settings_args(PLUMBING_SETTINGS)]
    first = tlpipe(*args, env=env, timeout=900)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "blessed       : yes" in first.stdout
    assert f"pushed: version 1 at {work}/serving/flowers/1" in first.stdout
    second = tlpipe(*args, env=env, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    for node in ("ingest", "statistics_gen", "transform", "tuner", "trainer"):
        assert re.search(rf"^\s+{node}\s+CACHED", second.stdout, re.M), second.stdout
    # The second run's Resolver found the first run's blessed model: the baseline.
    assert re.search(r"^\s+latest_blessed_model\s+COMPLETE", second.stdout, re.M), second.stdout
    assert "already serving, not pushed again: version 1" in second.stdout
    assert not (work / "metadata.sqlite").exists()

    runs = tlpipe("runs", "--config", config, "--json", env=env)
    assert runs.returncode == 0, runs.stdout + runs.stderr
    assert [r["status"] for r in json.loads(runs.stdout)] == ["complete", "complete"], runs.stdout
    compare = tlpipe("compare", "--config", config, "--format", "json", env=env, timeout=300)
    assert compare.returncode == 0, compare.stdout + compare.stderr
    [row] = json.loads(compare.stdout)["versions"]  # the cached second run trained no new model
    assert row["model_id"] and row["pushed"] and row["blessed"] and row["version"] == 1, row

    logs = [p.read_text(errors="replace") for p in (work / "logs").iterdir() if p.is_file()]
    for text in [*logs, first.stdout, first.stderr, second.stdout, second.stderr, runs.stdout,
                 compare.stdout, compare.stderr]:
        assert mariadb.password not in text


def test_the_run_log_redacts_the_password():
    import io
    import logging

    from tlpipe.pipeline.local_runner import RedactSecrets

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets(["pw-123", ""]))
    logger = logging.getLogger("tlpipe.test.redact")
    logger.addHandler(handler)
    try:
        logger.warning("Using connection config:\n %s", 'mysql { password: "pw-123" }')
        logger.warning("100% plain")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == 'Using connection config:\n mysql { password: "********" }\n100% plain\n'
