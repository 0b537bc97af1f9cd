"""Locations as local paths or URLs: derivation in the config, helpers, publishing a version."""
import os

import pytest
from tlpipe.components import storage
from tlpipe.components.config import ConfigError, PipelineConfig
from tlpipe.components.config_loading import load_config, validate
from tlpipe.pipeline.lineage import connection_config


def test_url_work_dir_is_never_resolved_against_the_current_directory():
    config = PipelineConfig.from_dict({"work_dir": "gs://bucket/work/", "storage": {"local_dir": "/tmp/tl"}})
    assert config.pipeline_root == "gs://bucket/work/pipeline"
    assert config.serving_model_dir == "gs://bucket/work/serving/flowers"
    assert config.feature_cache_dir == "gs://bucket/work/cache/features"
    assert config.metadata_path == "/tmp/tl/metadata.sqlite"
    assert config.logs_dir == "/tmp/tl/logs"


def test_each_location_is_separately_overridable(tmp_path):
    config = load_config(None, ["storage.pipeline_root=s3://b/root", "storage.serving_dir=gs://s/serving",
                                "storage.feature_cache_dir=hdfs://nn/cache"], work_dir=str(tmp_path))
    assert (config.pipeline_root, config.serving_base, config.feature_cache_dir) == (
        "s3://b/root", "gs://s/serving", "hdfs://nn/cache")
    assert config.metadata_path == str(tmp_path / "metadata.sqlite")  # local work dir: local things there


def test_local_work_dir_keeps_its_layout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = PipelineConfig(work_dir="w")
    assert config.pipeline_root == str(tmp_path.resolve() / "w" / "pipeline")
    assert config.serving_model_dir == str(tmp_path.resolve() / "w" / "serving" / "flowers")


def test_a_url_work_dir_needs_a_local_dir_and_sqlite_must_be_local():
    with pytest.raises(ConfigError, match="set storage.local_dir"):
        validate(PipelineConfig(work_dir="gs://b/w"))
    with pytest.raises(ConfigError, match="metadata.sqlite must be a local file"):
        PipelineConfig.from_dict({"metadata": {"sqlite": "gs://b/m.sqlite"}})
    with pytest.raises(ConfigError, match="not both"):
        PipelineConfig.from_dict({"metadata": {"sqlite": "/m", "mysql": {"database": "d", "user": "u"}}})


def test_mysql_password_comes_from_the_named_variable_and_stays_out_of_messages(monkeypatch):
    config = PipelineConfig.from_dict({"metadata": {"mysql": {
        "host": "db", "port": 3307, "database": "mlmd", "user": "tl", "password_env": "TL_DB_PW"}}})
    monkeypatch.delenv("TL_DB_PW", raising=False)
    with pytest.raises(ConfigError, match="TL_DB_PW is not set"):
        validate(config)
    monkeypatch.setenv("TL_DB_PW", "s3cret")
    conn = connection_config(config)
    assert (conn.mysql.host, conn.mysql.port, conn.mysql.database, conn.mysql.user,
            conn.mysql.password) == ("db", 3307, "mlmd", "tl", "s3cret")
    assert config.metadata_path is None
    assert config.metadata_description == "mysql://tl@db:3307/mlmd"
    assert "s3cret" not in config.to_json()
    with pytest.raises(ConfigError, match="unknown setting 'metadata.mysql.password'"):
        PipelineConfig.from_dict({"metadata": {"mysql": {"database": "d", "user": "u", "password": "x"}}})


def test_join_keeps_the_scheme():
    assert storage.join("gs://b/", "a", "/b/") == "gs://b/a/b"
    assert storage.join("ram://", "work") == "ram://work" and storage.join("gs://b/") == "gs://b"
    assert storage.join("/x", "a") == "/x/a"
    assert storage.absolute("ram://w/") == "ram://w"


@pytest.mark.parametrize("base", ["ram://publish", "local"])
def test_publish_tree_makes_a_complete_version_appear(base, tmp_path):
    import tensorflow as tf

    root = str(tmp_path) if base == "local" else base
    staging, final = storage.join(root, ".tmp-1"), storage.join(root, "1")
    storage.write_bytes(storage.join(staging, "variables", "variables.index"), b"idx")
    storage.write_bytes(storage.join(staging, "saved_model.pb"), b"pb")
    storage.write_bytes(storage.join(staging, "zz.json"), b"{}")
    order = []
    copy = tf.io.gfile.copy
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tf.io.gfile, "copy", lambda s, d, overwrite=False: (order.append(
            os.path.basename(d)), copy(s, d, overwrite=overwrite)))
        storage.publish_tree(staging, final, last="saved_model.pb")
    assert storage.read_bytes(storage.join(final, "variables", "variables.index")) == b"idx"
    assert storage.read_bytes(storage.join(final, "saved_model.pb")) == b"pb"
    assert not storage.exists(staging)
    if base != "local":
        assert order[-1] == "saved_model.pb" and len(order) == 3  # copied, the model file last


def test_weights_go_through_a_local_file(tmp_path):
    written = []
    storage.save_through_local("ram://weights/w.h5", lambda p: (written.append(p), open(p, "wb").write(b"h5")))
    assert not written[0].startswith("ram://") and not os.path.exists(written[0])
    local = tmp_path / "Format-Keras" / "w.h5"  # a local folder is created too, as h5py will not
    storage.save_through_local(str(local), lambda p: open(p, "wb").write(b"h5"))
    assert local.read_bytes() == b"h5"
    with storage.local_copy("ram://weights/w.h5") as local:
        assert open(local, "rb").read() == b"h5"
