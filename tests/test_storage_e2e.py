"""The whole DAG with a non-local work dir (TensorFlow's in-process ram://; why, and the shims,
in tests/ram_storage.py): it completes and pushes, every artifact and the pushed version are
under the URL, and only logs and the SQLite ML Metadata store land in storage.local_dir."""
import json
import subprocess
import sys

import pytest
from conftest import PLUMBING_SETTINGS, REPO, settings_args

pytestmark = pytest.mark.e2e


def test_whole_dag_on_a_url_work_dir_completes_and_pushes(tmp_path, tiny_images):
    local = tmp_path / "local"
    args = ["run", "--data", str(tiny_images), "--work-dir", "ram://work", "--set",
            f"storage.local_dir={local}", *settings_args(PLUMBING_SETTINGS)]  # storage, not the model
    result = subprocess.run([sys.executable, str(REPO / "tests" / "ram_storage.py"), *args],
                            capture_output=True, text=True, cwd=tmp_path,
                            timeout=1200)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    assert "blessed       : yes" in result.stdout
    assert "pushed: version 1 at ram://work/serving/flowers/1" in result.stdout
    files = json.loads(result.stdout.split("RAM_LISTING ", 1)[1].splitlines()[0])
    version = "ram://work/serving/flowers/1/"
    for name in ("saved_model.pb", "variables/variables.index", "metadata.json", "verdict.html",
                 "assets.extra/tf_serving_warmup_requests"):
        assert files.get(version + name), (name, sorted(f for f in files if f.startswith(version)))
    assert not [f for f in files if "/.tmp-" in f]  # the staging folder is gone
    for node in ("ingest", "statistics_gen", "transform", "tuner", "trainer", "evaluator", "pusher"):
        assert any(f.startswith(f"ram://work/pipeline/{node}/") for f in files), node
    assert any(f.endswith("Format-Keras/classifier.weights.h5") for f in files)  # h5 via a local file
    assert sorted(p.name for p in local.iterdir()) == ["logs", "metadata.sqlite"]
    assert not list(tmp_path.glob("**/ram:*"))  # no URL taken for a local path (`/cwd/ram:/work`)
