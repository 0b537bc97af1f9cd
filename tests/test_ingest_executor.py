"""The ingest node's driver + Beam executor on real bytes: every bad case, splits, spans, manifest.

Runs the real component definition (`make_ingest`), TFX's span-resolving driver (ours adds the
window) and the Beam executor in this process (components/ingest/local.py), and reads what it
wrote: TFRecords, quarantine.csv, summary.json, label_vocabulary.json.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tlpipe.components import features
from tlpipe.components.config import PipelineConfig
from tlpipe.components.ingest.executor import IngestError
from tlpipe.components.ingest.local import run_ingest
from tlpipe.components.ingest.report import quarantine_summary

RNG = np.random.default_rng(7)


# --- real image bytes -------------------------------------------------------------------------

def _rgb(h=24, w=32, value=None) -> Image.Image:
    if value is not None:
        return Image.fromarray(np.full((h, w, 3), value, np.uint8))
    return Image.fromarray(RNG.integers(0, 255, (h, w, 3), dtype=np.uint8))


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def jpeg(**kw) -> bytes:
    return _encode(_rgb(**kw), "JPEG", quality=90)


def png(**kw) -> bytes:
    return _encode(_rgb(**kw), "PNG")


def cmyk_jpeg() -> bytes:
    return _encode(_rgb().convert("CMYK"), "JPEG")


def gray_jpeg() -> bytes:
    return _encode(_rgb().convert("L"), "JPEG")


def rgba_png() -> bytes:
    img = _rgb().convert("RGBA")
    img.putalpha(128)
    return _encode(img, "PNG")


def png16() -> bytes:
    return _encode(Image.fromarray(RNG.integers(0, 65535, (24, 32), dtype=np.uint16)), "PNG")


def animated_gif() -> bytes:
    frames = [_rgb(value=v) for v in (30, 220, 120)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def exif_rotated_jpeg() -> bytes:
    img = _rgb(h=20, w=40)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW to display
    return _encode(img, "JPEG", exif=exif.tobytes())


def one_bit_bmp() -> bytes:  # Pillow reads it; TensorFlow's decoder does not
    return _encode(_rgb().convert("1"), "BMP")


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- the tree with every bad case ---------------------------------------------------------------

WRITTEN = "written"


def build_bad_tree(root: Path) -> dict[str, tuple[str, str]]:
    """Creates the tree; returns relative path -> (outcome, label or reason) for every input."""
    expect: dict[str, tuple[str, str]] = {}

    def put(rel: str, data: bytes, outcome: str, what: str):
        _write(root / rel, data)
        expect[rel] = (outcome, what)

    for i in range(6):  # plain images so every class reaches train and eval
        put(f"cats/plain_{i}.jpg", jpeg(), WRITTEN, "cats")
        put(f"dogs/plain_{i}.png", png(), WRITTEN, "dogs")
        put(f"été 日本/plain_{i}.jpg", jpeg(), WRITTEN, "été 日本")
    put("cats/UPPER.JPG", jpeg(), WRITTEN, "cats")
    put("cats/cmyk.jpg", cmyk_jpeg(), WRITTEN, "cats")
    put("cats/gray.jpeg", gray_jpeg(), WRITTEN, "cats")
    put("cats/rgba.png", rgba_png(), WRITTEN, "cats")
    put("cats/sixteen_bit.png", png16(), WRITTEN, "cats")
    put("cats/animated.gif", animated_gif(), WRITTEN, "cats")
    put("cats/rotated.jpg", exif_rotated_jpeg(), WRITTEN, "cats")
    put("dogs/a photo with spaces.webp", _encode(_rgb(), "WEBP"), WRITTEN, "dogs")
    put("dogs/ñandú 写真.bmp", _encode(_rgb(), "BMP"), WRITTEN, "dogs")
    put("cats/zero.jpg", b"", "quarantined", "empty_file")
    full = jpeg(h=64, w=64)
    put("cats/truncated.jpg", full[: len(full) // 2], "quarantined", "truncated")
    full_png = png(h=64, w=64)
    put("dogs/truncated.png", full_png[: len(full_png) // 2], "quarantined", "truncated")
    put("dogs/not_really.jpg", b"this is text, not an image\n" * 20, "quarantined",
        "undecodable")
    put("dogs/notes.txt", b"some notes", "quarantined", "not_an_image")
    put("dogs/.DS_Store", b"\x00\x00\x00\x01Bud1" + bytes(100), "quarantined", "not_an_image")
    put("dogs/one_bit.bmp", one_bit_bmp(), "quarantined", "unsupported_by_decoder")
    put("dogs/huge.png", png(h=120, w=120), "quarantined", "too_many_pixels")
    # Byte-identical files: kept once within a class (smallest path), conflicts across classes.
    twin = jpeg()
    put("cats/twin_a.jpg", twin, WRITTEN, "cats")
    put("cats/twin_b.jpg", twin, "quarantined", "duplicate")
    clash = png()
    put("cats/clash.png", clash, "quarantined", "label_conflict")
    put("dogs/clash.png", clash, "quarantined", "label_conflict")
    (root / "cats" / "nested").mkdir()
    _write(root / "cats" / "nested" / "deeper.jpg", jpeg())  # not read: reported as a folder
    expect["cats/nested"] = ("quarantined", "directory")
    (root / "empty_class").mkdir()
    return expect


def _config(**data) -> PipelineConfig:
    config = PipelineConfig()
    for key, value in data.items():
        setattr(config.data, key, value)
    return config


def read_examples(examples_uri: str) -> dict[str, dict[str, tf.train.Example]]:
    """split -> relative path -> example."""
    out: dict[str, dict[str, tf.train.Example]] = {}
    for split_dir in sorted(Path(examples_uri).glob("Split-*")):
        split = split_dir.name[len("Split-"):]
        out[split] = {}
        for f in split_dir.glob("*.gz"):
            for record in tf.data.TFRecordDataset(str(f), compression_type="GZIP"):
                ex = tf.train.Example.FromString(record.numpy())
                path = ex.features.feature[features.PATH_KEY].bytes_list.value[0].decode()
                assert path not in out[split]
                out[split][path] = ex
    return out


def _int(ex, key):
    return ex.features.feature[key].int64_list.value[0]


def _str(ex, key):
    return ex.features.feature[key].bytes_list.value[0]


def _rows(path: str) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_tree")
    expect = build_bad_tree(root)
    out = tmp_path_factory.mktemp("bad_out")
    run = run_ingest(_config(max_pixels=100 * 100, max_rejected_share=1.0), str(root), str(out))
    return root, expect, run


# --- the tests ------------------------------------------------------------------------------------

def test_every_input_is_written_or_quarantined_with_its_reason(bad_run):
    root, expect, run = bad_run
    examples = read_examples(run.examples_uri)
    written = {p: ex for split in examples.values() for p, ex in split.items()}
    rows = _rows(run.quarantine_path)
    quarantined = {r["path"]: r["reason"] for r in rows}
    assert len(rows) == len(quarantined)  # each input once
    outcomes = {p: (WRITTEN, _str(ex, features.LABEL_NAME_KEY).decode())
                for p, ex in written.items()}
    outcomes.update({p: ("quarantined", reason) for p, reason in quarantined.items()})
    assert outcomes == expect
    summary = json.loads(Path(run.summary_path).read_text())
    assert summary["inputs"] == len(expect) == summary["written"] + summary["quarantined"]
    assert summary["written"] == len(written) and summary["quarantined"] == len(quarantined)
    assert summary["empty_folders"] == ["empty_class"]
    assert quarantine_summary(str(Path(run.quarantine_path).parent))["by_reason"] == \
        summary["quarantined_by_reason"]


def test_examples_carry_the_stored_bytes_and_a_consistent_vocabulary(bad_run):
    root, _, run = bad_run
    vocabulary = json.loads(Path(run.vocabulary_path).read_text())
    assert vocabulary == ["cats", "dogs", "été 日本"]  # sorted; empty_class is not a class
    examples = read_examples(run.examples_uri)
    for split in examples.values():
        for path, ex in split.items():
            data = (root / path).read_bytes()
            assert _str(ex, features.IMAGE_KEY) == data  # as stored, never re-encoded
            assert _str(ex, features.SHA256_KEY).decode() == hashlib.sha256(data).hexdigest()
            name = _str(ex, features.LABEL_NAME_KEY).decode()
            assert vocabulary[_int(ex, features.LABEL_KEY)] == name
            assert path.startswith(name + "/")
    every = {p: ex for split in examples.values() for p, ex in split.items()}
    cmyk, gray, rgba = every["cats/cmyk.jpg"], every["cats/gray.jpeg"], every["cats/rgba.png"]
    assert [_int(e, features.CHANNELS_KEY) for e in (cmyk, gray, rgba)] == [4, 1, 4]
    assert _str(every["cats/UPPER.JPG"], features.FORMAT_KEY) == b"jpeg"
    assert _str(every["dogs/a photo with spaces.webp"], features.FORMAT_KEY) == b"webp"
    rotated = every["cats/rotated.jpg"]
    assert _int(rotated, features.EXIF_ORIENTATION_KEY) == 6  # recorded, not applied:
    assert (_int(rotated, features.HEIGHT_KEY), _int(rotated, features.WIDTH_KEY)) == (20, 40)
    assert _int(every["cats/plain_0.jpg"], features.EXIF_ORIENTATION_KEY) == 0


def test_every_written_image_decodes_through_the_transform_graph(bad_run):
    """Accepted means Transform's (and serving's) decoder reads it: no surprise hours later."""
    from tlpipe.components.transform.preprocessing import decode_and_resize

    _, _, run = bad_run
    examples = read_examples(run.examples_uri)
    every = {p: ex for split in examples.values() for p, ex in split.items()}
    batch = tf.constant([_str(ex, features.IMAGE_KEY) for ex in every.values()])
    pixels = decode_and_resize(batch, 16).numpy()
    assert pixels.shape == (len(every), 16, 16, 3)
    gif = list(every).index("cats/animated.gif")
    assert abs(int(pixels[gif].mean()) - 30) <= 3  # the first frame (value 30), not the others


def test_summary_counts_reasons_notes_and_the_rejected_share(bad_run):
    _, expect, run = bad_run
    summary = json.loads(Path(run.summary_path).read_text())
    reasons: dict[str, int] = {}
    for outcome, what in expect.values():
        if outcome != WRITTEN:
            reasons[what] = reasons.get(what, 0) + 1
    assert summary["quarantined_by_reason"] == reasons
    not_counted = {"not_an_image", "directory", "duplicate"}
    counted = sum(n for r, n in reasons.items() if r not in not_counted)
    image_files = len(expect) - reasons["not_an_image"] - reasons["directory"]
    assert summary["rejected_share"] == pytest.approx(counted / image_files)
    notes = summary["accepted_notes"]
    for note in ("cmyk", "grayscale", "16_bit", "alpha", "animated_first_frame_used",
                 "exif_orientation_not_applied"):
        assert notes.get(note, 0) >= 1, note
    by_class = summary["written_by_class"]
    assert all(v["train"] >= 1 and v["eval"] >= 1 for v in by_class.values())


def test_too_many_rejected_fails_with_a_clear_message_and_keeps_the_report(tmp_path, bad_run):
    root, _, _ = bad_run
    out = tmp_path / "out"
    with pytest.raises(IngestError) as err:
        run_ingest(_config(max_pixels=100 * 100), str(root), str(out))  # default limit 5%
    message = str(err.value)
    assert "above data.max_rejected_share 5.0%" in message
    assert "truncated 2" in message and str(out / "quarantine_report" / "quarantine.csv") in message
    assert len(_rows(str(out / "quarantine_report" / "quarantine.csv"))) > 0


def test_a_single_class_fails_clearly(tmp_path):
    for i in range(3):
        _write(tmp_path / "data" / "only" / f"{i}.jpg", jpeg())
    _write(tmp_path / "data" / "broken" / "x.jpg", b"")  # its only file is bad: not a class
    with pytest.raises(IngestError, match="1 class with usable images \\(only\\)"):
        run_ingest(_config(max_rejected_share=1.0), str(tmp_path / "data"), str(tmp_path / "o"))
    summary = json.loads((tmp_path / "o" / "quarantine_report" / "summary.json").read_text())
    assert summary["classes_without_examples"] == ["broken"]


def test_splits_stay_put_when_files_are_added(tmp_path, tiny_images):
    first_root = tmp_path / "v1"
    shutil.copytree(tiny_images, first_root)
    first = read_examples(run_ingest(_config(), str(first_root), str(tmp_path / "o1"))
                          .examples_uri)
    grown = tmp_path / "v2"
    shutil.copytree(first_root, grown)
    for i in range(12):
        _write(grown / "class_a" / f"added_{i}.jpg", jpeg())
        _write(grown / "class_c" / f"added_{i}.png", png())
    second = read_examples(run_ingest(_config(), str(grown), str(tmp_path / "o2")).examples_uri)
    split_of = {p: s for s, exs in second.items() for p in exs}
    before = {p: s for s, exs in first.items() for p in exs}
    assert len(split_of) == len(before) + 24
    assert {p: split_of[p] for p in before} == before


def test_optional_test_split(tmp_path, tiny_images):
    run = run_ingest(_config(train_ratio=0.6, test_ratio=0.2), str(tiny_images),
                     str(tmp_path / "o"))
    examples = read_examples(run.examples_uri)
    assert sorted(examples) == ["eval", "test", "train"]
    summary = json.loads(Path(run.summary_path).read_text())
    for counts in summary["written_by_class"].values():
        assert min(counts.values()) >= 1
    assert run.artifacts["examples"][0].split_names == '["train", "eval", "test"]'


def _span_tree(root: Path):
    for span in (1, 2):
        for label in ("red", "blue"):
            for i in range(3):
                _write(root / f"span-{span}" / label / f"s{span}_{i}.jpg", jpeg())


def test_latest_span_by_default_and_a_rolling_window_of_two(tmp_path):
    root = tmp_path / "incoming"
    _span_tree(root)
    latest = run_ingest(_config(pattern="span-{SPAN}/*/*"), str(root), str(tmp_path / "a"))
    paths = {p for exs in read_examples(latest.examples_uri).values() for p in exs}
    assert paths and all(p.startswith("span-2/") for p in paths)
    assert latest.artifacts["examples"][0].span == 2

    window = run_ingest(_config(pattern="span-{SPAN}/*/*", num_spans=2), str(root),
                        str(tmp_path / "b"))
    paths = {p for exs in read_examples(window.examples_uri).values() for p in exs}
    assert {p.split("/")[0] for p in paths} == {"span-1", "span-2"} and len(paths) == 12
    assert json.loads(Path(window.summary_path).read_text())["spans"] == [1, 2]
    assert window.artifacts["examples"][0].get_string_custom_property("spans") == "1,2"
    fingerprint = window.exec_properties["input_fingerprint"]
    assert "split:span-1" in fingerprint and "split:span-2" in fingerprint

    # A new span arrives: the window slides.
    for label in ("red", "blue"):
        for i in range(2):
            _write(root / "span-3" / label / f"s3_{i}.jpg", jpeg())
    slid = run_ingest(_config(pattern="span-{SPAN}/*/*", num_spans=2), str(root),
                      str(tmp_path / "c"))
    paths = {p for exs in read_examples(slid.examples_uri).values() for p in exs}
    assert {p.split("/")[0] for p in paths} == {"span-2", "span-3"}


def test_csv_manifest(tmp_path):
    data = tmp_path / "data"
    images = data / "pool"
    expect = {}
    for label in ("cat", "dog"):
        for i in range(4):
            _write(images / f"{label} {i}.jpg", jpeg())
    outside = _write(tmp_path / "elsewhere" / "far.png", png())
    shared = _write(images / "shared.jpg", jpeg())
    lines = ["path,label,split"]
    for label in ("cat", "dog"):
        for i in range(4):
            split = "eval" if i == 0 else ""
            lines.append(f'"pool/{label} {i}.jpg",{label},{split}')
            expect[f"pool/{label} {i}.jpg"] = (WRITTEN, label)
    lines.append(f"{outside},dog")
    expect[str(outside)] = (WRITTEN, "dog")
    lines.append("pool/missing.jpg,cat")
    expect["pool/missing.jpg"] = ("quarantined", "missing_file")
    lines.append("pool/cat 1.jpg,cat")  # the same row again
    lines.append("pool/shared.jpg,cat")
    lines.append("pool/shared.jpg,dog")  # one file, two labels
    expect["pool/shared.jpg"] = ("quarantined", "label_conflict")
    lines.append("pool/cat 2.jpg,cat,holdout")  # unknown split
    lines.append("just-one-field")
    _write(data / "labels.csv", ("\n".join(lines) + "\n").encode())
    run = run_ingest(_config(manifest="labels.csv", max_rejected_share=1.0), str(data),
                     str(tmp_path / "o"))
    examples = read_examples(run.examples_uri)
    written = {p: _str(ex, features.LABEL_NAME_KEY).decode()
               for exs in examples.values() for p, ex in exs.items()}
    assert written == {p: w for p, (o, w) in expect.items() if o == WRITTEN}
    for label in ("cat", "dog"):
        assert f"pool/{label} 0.jpg" in examples["eval"]  # the split column wins
    reasons = sorted((r["path"], r["reason"]) for r in _rows(run.quarantine_path))
    assert reasons == sorted([
        ("pool/missing.jpg", "missing_file"), ("pool/cat 1.jpg", "duplicate"),
        ("pool/shared.jpg", "label_conflict"), ("pool/shared.jpg", "label_conflict"),
        ("pool/cat 2.jpg", "bad_manifest_row"), ("just-one-field", "bad_manifest_row")])
    summary = json.loads(Path(run.summary_path).read_text())
    assert summary["inputs"] == len(lines) - 1 == summary["written"] + summary["quarantined"]
    assert shared.exists()


def test_splits_hold_only_committed_shards_and_no_staging_is_left(bad_run):
    """Bundles write into a staging folder; only the files the pipeline listed move into the
    splits, named like Beam's sink would, and the staging folder goes."""
    _, _, run = bad_run
    examples = Path(run.examples_uri)
    assert not (examples / ".ingest-staging").exists()
    summary = json.loads(Path(run.summary_path).read_text())
    records = read_examples(str(examples))
    for split, written in summary["written_by_split"].items():
        files = sorted(p.name for p in (examples / f"Split-{split}").iterdir())
        assert files and all(f.startswith("data_tfrecord-") and
                             f.endswith(f"-of-{len(files):05d}.gz") for f in files)
        assert written == len(records[split])


def test_the_executor_reads_the_typed_data_section_the_node_packed(tmp_path):
    """What make_ingest packs comes back as the same typed settings (ints stay ints), and a
    setting ingest does not read (on_class_change) leaves the node's cache key alone."""
    from tlpipe.components.config import DataConfig
    from tlpipe.components.ingest.component import make_ingest
    from tlpipe.components.ingest.executor import data_config

    settings = dict(extensions=["png"], max_pixels=1234, max_rejected_share=0.5,
                    min_images_per_class=3, manifest="list.csv")
    data = DataConfig(**settings)
    props = make_ingest(data, str(tmp_path)).exec_properties
    read = data_config(props)
    assert (read.extensions, read.max_pixels, read.max_rejected_share, read.min_images_per_class,
            read.manifest) == (["png"], 1234, 0.5, 3, "list.csv")
    assert isinstance(read.max_pixels, int)
    other = make_ingest(DataConfig(**settings, on_class_change="accept"), str(tmp_path))
    assert other.exec_properties["custom_config"] == props["custom_config"]


def test_final_examples_carry_a_class_id_and_no_provisional_feature(bad_run):
    from tlpipe.components.ingest.stages import NOTES_KEY

    _, _, run = bad_run
    names = json.loads(Path(run.vocabulary_path).read_text())
    for split in read_examples(run.examples_uri).values():
        for ex in split.values():
            assert NOTES_KEY not in ex.features.feature
            assert names[_int(ex, features.LABEL_KEY)] == _str(ex, features.LABEL_NAME_KEY).decode()
