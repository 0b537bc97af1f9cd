from pathlib import Path

from tlpipe.serving import layout


def _saved_model(tmp_path: Path) -> Path:
    src = tmp_path / "model"
    (src / "variables").mkdir(parents=True)
    (src / "saved_model.pb").write_bytes(b"pb")
    (src / "variables" / "variables.index").write_bytes(b"idx")
    return src


def test_push_writes_increasing_integer_versions_with_metadata(tmp_path: Path):
    src, base = _saved_model(tmp_path), tmp_path / "serving" / "m"
    first = layout.push(str(src), str(base), {"source_model_uri": "a"})
    second = layout.push(str(src), str(base), {"source_model_uri": "b"})
    assert (first.number, second.number) == (1, 2)
    assert (base / "2" / "variables" / "variables.index").read_bytes() == b"idx"
    assert [v.number for v in layout.versions(str(base))] == [1, 2]
    assert layout.read_metadata(str(base / "1"))["source_model_uri"] == "a"
    assert not [p for p in base.iterdir() if p.name.startswith(".tmp")]


def test_incomplete_and_foreign_directories_are_not_versions(tmp_path: Path):
    base = tmp_path / "m"
    (base / ".tmp-3-abc").mkdir(parents=True)
    (base / "notes").mkdir()
    (base / "7").mkdir()
    assert [v.number for v in layout.versions(str(base))] == [7]
    pushed = layout.push(str(_saved_model(tmp_path)), str(base), {"source_model_uri": "x"})
    assert pushed.number == 8


def test_find_pushed_recognises_the_same_trained_model(tmp_path: Path):
    base = tmp_path / "m"
    layout.push(str(_saved_model(tmp_path)), str(base), {"source_model_uri": "/runs/model/9"})
    assert layout.find_pushed(str(base), "/runs/model/9").number == 1
    assert layout.find_pushed(str(base), "/runs/model/10") is None
    assert layout.versions(str(tmp_path / "absent")) == []


def test_retention_keeps_newest_and_never_a_labelled_version(tmp_path: Path):
    src, base = _saved_model(tmp_path), tmp_path / "m"
    for i in range(5):
        layout.push(str(src), str(base), {"source_model_uri": str(i)})
    layout.write_labels(str(base), {"stable": 2})
    assert layout.read_labels(str(base)) == {"stable": 2}
    retired = layout.retire_old_versions(str(base), keep=2)
    assert retired == [1, 3]
    assert [v.number for v in layout.versions(str(base))] == [2, 4, 5]
    assert layout.retire_old_versions(str(base), keep=0) == []
    assert not [p for p in base.iterdir() if p.name.startswith(".")]


def test_a_poller_never_sees_a_partial_version(tmp_path: Path):
    """Pushes and retirements race a reader; every numeric dir it sees is complete."""
    import threading
    import time

    src, base = _saved_model(tmp_path), tmp_path / "m"
    big = src / "variables" / "variables.data-00000-of-00001"
    big.write_bytes(b"x" * 2_000_000)  # slow enough to copy that a reader can catch it
    stop, partial, seen = threading.Event(), [], set()

    def poll():
        while not stop.is_set():
            for version in layout.versions(str(base)):
                path = Path(version.path)
                complete = all((path / f).is_file() for f in (
                    "saved_model.pb", "variables/variables.index",
                    "variables/variables.data-00000-of-00001", layout.METADATA_FILE))
                if not complete and path.exists():  # vanished = retired, not partial
                    partial.append(version.number)
                seen.add(version.number)

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for i in range(12):
            pushed = layout.push(str(src), str(base), {"source_model_uri": str(i)})
            deadline = time.time() + 5  # let the reader observe each version once
            while pushed.number not in seen and time.time() < deadline:
                time.sleep(0.001)
            layout.retire_old_versions(str(base), keep=3)
    finally:
        stop.set()
        reader.join(timeout=30)
    assert not partial
    assert seen == set(range(1, 13))
    assert [v.number for v in layout.versions(str(base))] == [10, 11, 12]
