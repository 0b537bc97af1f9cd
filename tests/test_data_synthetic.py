"""The synthetic folders must be real, varied, deterministic and separable, or pipeline tests prove nothing."""

from __future__ import annotations

import hashlib
import tarfile
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tlpipe.data.flowers import FLOWERS_CLASSES
from tlpipe.data.synthetic import class_names, make_flowers_tarball, make_image_folder


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _mean_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(axis=0)


def test_class_names_sort_in_index_order():
    assert class_names(3) == ["class_a", "class_b", "class_c"]
    many = class_names(30)
    assert many == sorted(many) and len(set(many)) == 30
    assert many[0] == "class_aa" and many[26] == "class_ba"


def test_layout_counts_and_names(tmp_path):
    names = make_image_folder(str(tmp_path), classes=4, per_class=5, size=24)

    assert names == sorted(names) == ["class_a", "class_b", "class_c", "class_d"]
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    for name in names:
        assert len(list((tmp_path / name).iterdir())) == 5


def test_every_file_decodes_with_varied_sizes(tmp_path):
    size = 32
    make_image_folder(str(tmp_path), classes=3, per_class=8, size=size)

    sizes = set()
    for path in _files(tmp_path):
        with Image.open(path) as img:
            img.load()
            w, h = img.size
        assert size <= w <= size * 1.5 and size <= h <= size * 1.5, (path, img.size)
        sizes.add((w, h))
    assert len(sizes) > 3
    assert any(w != h for w, h in sizes)


def test_default_formats_alternate_within_each_class(tmp_path):
    names = make_image_folder(str(tmp_path), classes=2, per_class=6, size=16)
    for name in names:
        exts = [p.suffix for p in sorted((tmp_path / name).iterdir())]
        assert exts == [".jpg", ".png"] * 3


def test_extra_formats_are_what_they_claim(tmp_path):
    make_image_folder(str(tmp_path), classes=2, per_class=5, size=16, formats=("gif", "bmp", "webp", "jpeg", "PNG"))
    expected = {".gif": "GIF", ".bmp": "BMP", ".webp": "WEBP", ".jpeg": "JPEG", ".png": "PNG"}
    seen = set()
    for path in _files(tmp_path):
        with Image.open(path) as img:
            assert img.format == expected[path.suffix]
        seen.add(path.suffix)
    assert seen == set(expected)


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="tiff"):
        make_image_folder(str(tmp_path), formats=("tiff",))


def test_deterministic_for_a_seed(tmp_path):
    def digest(root: Path) -> list[tuple[str, str]]:
        return [(str(p.relative_to(root)), hashlib.sha256(p.read_bytes()).hexdigest()) for p in _files(root)]

    make_image_folder(str(tmp_path / "a"), classes=3, per_class=4, seed=7)
    make_image_folder(str(tmp_path / "b"), classes=3, per_class=4, seed=7)
    make_image_folder(str(tmp_path / "c"), classes=3, per_class=4, seed=8)

    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert [h for _, h in digest(tmp_path / "a")] != [h for _, h in digest(tmp_path / "c")]


def test_images_within_a_class_are_not_identical(tmp_path):
    make_image_folder(str(tmp_path), classes=1, per_class=6, size=24, formats=("png",))
    hashes = {hashlib.sha256(p.read_bytes()).hexdigest() for p in _files(tmp_path)}
    assert len(hashes) == 6


def test_classes_are_distinguishable_by_colour(tmp_path):
    names = make_image_folder(str(tmp_path), classes=6, per_class=6, size=24)
    per_image = {n: np.array([_mean_rgb(p) for p in sorted((tmp_path / n).iterdir())]) for n in names}
    centroids = {n: v.mean(axis=0) for n, v in per_image.items()}

    # The first three classes are red-, green- and blue-dominant.
    for name, channel in zip(names[:3], range(3)):
        assert int(np.argmax(centroids[name])) == channel
    for a, b in combinations(names, 2):
        assert np.linalg.norm(centroids[a] - centroids[b]) > 20, (a, b)

    # Even a nearest-centroid rule on mean colour separates them, so a CNN certainly can.
    correct = total = 0
    for name, vectors in per_image.items():
        for v in vectors:
            guess = min(centroids, key=lambda n: np.linalg.norm(v - centroids[n]))
            correct += guess == name
            total += 1
    assert correct / total >= 0.9


def test_flowers_tarball_from_synthetic_images(tmp_path):
    sha = make_flowers_tarball(None, str(tmp_path / "a.tgz"), per_class=2)
    again = make_flowers_tarball(None, str(tmp_path / "b.tgz"), per_class=2)

    assert sha == again == hashlib.sha256((tmp_path / "a.tgz").read_bytes()).hexdigest()
    with tarfile.open(tmp_path / "a.tgz") as tar:
        files = sorted(m.name for m in tar.getmembers() if m.isfile())
    expected = [f"flower_photos/{c}/{n:03d}.jpg" for c in FLOWERS_CLASSES for n in range(2)]
    assert files == sorted(expected + ["flower_photos/LICENSE.txt"])


def test_flowers_tarball_from_a_source_tree(tmp_path):
    src = tmp_path / "src"
    names = make_image_folder(str(src), classes=2, per_class=4, size=16)

    make_flowers_tarball(str(src), str(tmp_path / "out" / "f.tgz"), per_class=3)

    with tarfile.open(tmp_path / "out" / "f.tgz") as tar:
        files = [m for m in tar.getmembers() if m.isfile() and not m.name.endswith("LICENSE.txt")]
        assert sorted({m.name.split("/")[1] for m in files}) == names
        assert len(files) == 6 and all(m.name.endswith(".jpg") for m in files)
        for m in files:  # PNG sources were converted, so the .jpg names do not lie
            with Image.open(tar.extractfile(m)) as img:
                assert img.format == "JPEG"
