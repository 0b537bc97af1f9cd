import shutil
from pathlib import Path

import pytest

from components.ingest.listing import DatasetError, assign_splits, scan_image_tree
from pipeline.config import IMAGE_EXTENSIONS


def _scan(root, pattern="*/*"):
    return scan_image_tree(str(root), pattern, IMAGE_EXTENSIONS, min_per_class=2)


def test_classes_sorted_and_labelled_by_parent_folder(tiny_images: Path):
    listing = _scan(tiny_images)
    assert listing.class_names == ["class_a", "class_b", "class_c"]
    assert len(listing.files) == 48
    assert all(f.relative_path.startswith(f.label_name + "/") for f in listing.files)


def test_extensions_are_case_insensitive_and_others_ignored(tmp_path: Path, tiny_images: Path):
    shutil.copytree(tiny_images, tmp_path / "d")
    src = tmp_path / "d" / "class_a" / "000.jpg"
    src.rename(tmp_path / "d" / "class_a" / "000.JPG")
    (tmp_path / "d" / "class_a" / "notes.txt").write_text("not an image")
    listing = _scan(tmp_path / "d")
    paths = {f.relative_path for f in listing.files}
    assert "class_a/000.JPG" in paths and "class_a/notes.txt" not in paths


def test_splits_are_deterministic_stratified_and_stable_when_files_are_added(tmp_path, tiny_images):
    listing = _scan(tiny_images)
    first = assign_splits(listing, 0.75, "train", "eval")
    assert first == assign_splits(_scan(tiny_images), 0.75, "train", "eval")
    for name in listing.class_names:
        members = [s for p, s in first.items() if p.startswith(name + "/")]
        assert "train" in members and "eval" in members
    assert 0.55 < sum(s == "train" for s in first.values()) / len(first) < 0.95
    grown = tmp_path / "grown"
    shutil.copytree(tiny_images, grown)
    for i in range(5):
        shutil.copy(grown / "class_b" / "000.jpg", grown / "class_b" / f"new_{i}.jpg")
    second = assign_splits(_scan(grown), 0.75, "train", "eval")
    assert all(second[p] == s for p, s in first.items())


def test_two_image_class_gets_one_of_each(tmp_path: Path, tiny_images: Path):
    for name in ("x", "y"):
        (tmp_path / name).mkdir()
        for i in range(2):
            shutil.copy(tiny_images / "class_a" / "000.jpg", tmp_path / name / f"{i}.jpg")
    splits = assign_splits(_scan(tmp_path), 0.8, "train", "eval")
    for name in ("x", "y"):
        assert sorted(s for p, s in splits.items() if p.startswith(name)) == ["eval", "train"]


def test_errors_name_the_problem(tmp_path: Path):
    with pytest.raises(DatasetError, match="not found"):
        _scan(tmp_path / "missing")
    with pytest.raises(DatasetError, match="no images"):
        _scan(tmp_path)


def test_span_pattern_reads_every_span_for_validation(tmp_path: Path, tiny_images: Path):
    shutil.copytree(tiny_images, tmp_path / "span-1")
    listing = _scan(tmp_path, "span-{SPAN}/*/*")
    assert listing.class_names == ["class_a", "class_b", "class_c"]
    assert listing.files[0].relative_path.startswith("span-1/")
