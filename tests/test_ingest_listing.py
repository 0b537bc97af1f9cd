"""What counts as an input, and the split rule: pure Python, no TensorFlow, no Beam."""
import os
import shutil
from pathlib import Path

import pytest
from tlpipe.components.config import IMAGE_EXTENSIONS
from tlpipe.components.ingest.listing import (
    Candidate,
    DatasetError,
    Rejected,
    check_image_tree,
    check_input,
    classify_entry,
    normalize_extensions,
    parse_manifest_row,
    split_folder_pattern,
)
from tlpipe.components.ingest.splits import SplitRatios, assign_splits, unit_hash

EXTS = normalize_extensions(IMAGE_EXTENSIONS)


def _files(root: Path) -> list[tuple[str, str]]:
    return sorted((p.relative_to(root).as_posix(), p.parent.name)
                  for p in root.glob("*/*") if p.is_file())


def test_validation_check_names_sorted_classes_and_is_bounded(tiny_images: Path):
    check = check_image_tree(str(tiny_images), "*/*", IMAGE_EXTENSIONS, min_per_class=2)
    assert check.class_names == ["class_a", "class_b", "class_c"]


def test_entries_are_classified_by_extension_case_insensitively(tmp_path: Path):
    outcome = classify_entry("000.JPG", False, str(tmp_path / "a"), str(tmp_path), EXTS)
    assert outcome == Candidate(str(tmp_path / "a" / "000.JPG"), "a/000.JPG", "a")
    for name in ("notes.txt", ".DS_Store"):
        outcome = classify_entry(name, False, str(tmp_path / "a"), str(tmp_path), EXTS)
        assert isinstance(outcome, Rejected) and outcome.reason == "not_an_image"
    assert classify_entry("sub", True, str(tmp_path / "a"), str(tmp_path), EXTS).reason == \
        "directory"


def test_splits_are_deterministic_stratified_and_stable_when_files_are_added(tmp_path,
                                                                             tiny_images):
    ratios = SplitRatios(train=0.75, eval=0.25)
    first = assign_splits(_files(tiny_images), ratios)
    assert first == assign_splits(list(reversed(_files(tiny_images))), ratios)
    for name in ("class_a", "class_b", "class_c"):
        members = [s for p, s in first.items() if p.startswith(name + "/")]
        assert "train" in members and "eval" in members
    assert 0.55 < sum(s == "train" for s in first.values()) / len(first) < 0.95
    grown = tmp_path / "grown"
    shutil.copytree(tiny_images, grown)
    for i in range(20):
        shutil.copy(grown / "class_b" / "000.jpg", grown / "class_b" / f"new_{i}.jpg")
    second = assign_splits(_files(grown), ratios)
    assert all(second[p] == s for p, s in first.items())


def test_tiny_classes_still_reach_every_split():
    ratios = SplitRatios(train=0.8, eval=0.2)
    splits = assign_splits([(f"{c}/{i}.jpg", c) for c in "xyzw" for i in range(2)], ratios)
    for c in "xyzw":
        assert sorted(s for p, s in splits.items() if p.startswith(c)) == ["eval", "train"]
    three = SplitRatios(train=0.7, eval=0.15, test=0.15)
    splits = assign_splits([(f"{c}/{i}.jpg", c) for c in "xyzw" for i in range(3)], three)
    for c in "xyzw":
        assert sorted(s for p, s in splits.items() if p.startswith(c)) == ["eval", "test",
                                                                           "train"]


def test_corrections_move_the_file_nearest_the_missing_split():
    ratios = SplitRatios(train=0.5, eval=0.5)
    # Find two paths that both hash into train: the higher one must go to eval.
    low = [f"k/{i}.jpg" for i in range(200) if unit_hash(f"k/{i}.jpg") < 0.5][:2]
    splits = assign_splits([(p, "k") for p in low], ratios)
    top = max(low, key=unit_hash)
    assert splits[top] == "eval" and splits[min(low, key=unit_hash)] == "train"


def test_given_splits_are_kept_and_count():
    ratios = SplitRatios(train=0.8, eval=0.2)
    files = [(f"m/{i}.jpg", "m") for i in range(4)]
    given = {"m/0.jpg": "eval"}
    splits = assign_splits(files, ratios, given)
    assert splits["m/0.jpg"] == "eval"
    natural = {p: ratios.natural(unit_hash(p)) for p, _ in files[1:]}
    if "train" in natural.values():  # eval is covered by the given row: nothing else moves
        assert all(splits[p] == s for p, s in natural.items())


def test_folder_pattern_needs_class_and_file():
    assert split_folder_pattern("span-3/*/*") == ("span-3/*", "*")
    with pytest.raises(DatasetError, match="class folder"):
        split_folder_pattern("*")


def test_errors_name_the_problem(tmp_path: Path):
    with pytest.raises(DatasetError, match="not found"):
        check_image_tree(str(tmp_path / "missing"), "*/*", IMAGE_EXTENSIONS)
    with pytest.raises(DatasetError, match="no images"):
        check_image_tree(str(tmp_path), "*/*", IMAGE_EXTENSIONS)
    (tmp_path / "only").mkdir()
    shutil.copy(Path(__file__), tmp_path / "only" / "x.jpg")
    with pytest.raises(DatasetError, match="at least 2"):
        check_image_tree(str(tmp_path), "*/*", IMAGE_EXTENSIONS)
    with pytest.raises(DatasetError, match="needs '{SPAN}'"):
        check_input(str(tmp_path), "*/*", None, IMAGE_EXTENSIONS, 1, num_spans=2)
    with pytest.raises(DatasetError, match="manifest not found"):
        check_input(str(tmp_path), "*/*", "labels.csv", IMAGE_EXTENSIONS, 1)


def test_empty_class_folder_is_left_for_the_executor(tmp_path: Path, tiny_images: Path):
    shutil.copytree(tiny_images, tmp_path / "d")
    (tmp_path / "d" / "empty").mkdir()
    check = check_image_tree(str(tmp_path / "d"), "*/*", IMAGE_EXTENSIONS, min_per_class=2)
    assert "empty" not in check.class_names


def test_span_pattern_reads_every_span_for_validation(tmp_path: Path, tiny_images: Path):
    shutil.copytree(tiny_images, tmp_path / "span-1")
    check = check_image_tree(str(tmp_path), "span-{SPAN}/*/*", IMAGE_EXTENSIONS, 2)
    assert check.class_names == ["class_a", "class_b", "class_c"]


def test_manifest_rows(tmp_path: Path):
    manifest = str(tmp_path / "sub" / "labels.csv")
    base = str(tmp_path)

    def parse(line):
        return parse_manifest_row(line, manifest, base, EXTS, ["train", "eval"])

    assert parse("path,label,split") is None and parse("\ufeffpath,label") is None
    assert parse("  ") is None
    assert parse("img/a.jpg,cat") == Candidate(str(tmp_path / "sub" / "img" / "a.jpg"),
                                               "sub/img/a.jpg", "cat")
    assert parse('"img/with, comma é.jpg",dog,EVAL') == Candidate(
        str(tmp_path / "sub" / "img" / "with, comma é.jpg"), "sub/img/with, comma é.jpg",
        "dog", "eval")
    outside = os.path.abspath(os.sep + "elsewhere/b.png")
    assert parse(f"{outside},cat") == Candidate(outside, outside, "cat")
    assert parse("img/a.jpg,cat,holdout").reason == "bad_manifest_row"
    assert parse("img/a.jpg").reason == "bad_manifest_row"
    assert parse("img/a.jpg,,train").reason == "bad_manifest_row"
    assert parse("img/notes.txt,cat").reason == "not_an_image"
