from pathlib import Path

from serving import layout


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
