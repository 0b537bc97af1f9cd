"""The shipped layer-name table config validation checks `base.cut_at` against is the bases' own."""
import json
import subprocess
import sys

from conftest import REPO
from tlpipe.components.trainer.backbones import BACKBONES
from tlpipe.components.trainer.base_layers import TABLE


def test_shipped_layer_names_match_freshly_built_bases():
    code = "import json; from components.trainer.base_layers import build_table; print(json.dumps(build_table()))"
    built = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                           timeout=600, check=True, env={"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3",
                                                         "PATH": "/usr/bin:/bin"})
    assert json.loads(built.stdout.splitlines()[-1]) == json.loads(TABLE.read_text())
    assert set(json.loads(TABLE.read_text())) == set(BACKBONES)
