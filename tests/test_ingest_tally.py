"""The ingest summary and its checks on plain tallies (no Beam): what summary.json says and
which sentences fail the run."""
from __future__ import annotations

from tlpipe.components.config import DataConfig
from tlpipe.components.ingest import images
from tlpipe.components.ingest.tally import Tally, problems, summarize

SPLITS = ["train", "eval"]


def _tally() -> Tally:
    folder_a, folder_b, bundle = Tally(), Tally(), Tally()
    for _ in range(4):
        folder_a.count_input("cat")
    folder_a.count_input("cat")  # notes.txt
    for _ in range(3):
        folder_b.count_input("dog")
    folder_b.count_input("owl")  # the only owl, undecodable
    bundle.rejected_by_reason.update([images.NOT_AN_IMAGE, images.UNDECODABLE])
    for split in ("train", "train", "train", "eval"):
        bundle.count_written("cat", split, ())
    for split in ("train", "eval", "eval"):
        bundle.count_written("dog", split, ("cmyk",) if split == "train" else ())
    empty = Tally(empty_folders={"bird"})
    return Tally().merge(folder_a).merge(folder_b).merge(bundle).merge(empty)


def test_summary_from_merged_tallies():
    summary = summarize(_tally(), ["cat", "dog"], DataConfig(), SPLITS, [3])
    assert summary["inputs"] == 9 == summary["written"] + summary["quarantined"]
    assert summary["written_by_split"] == {"train": 4, "eval": 3}
    assert summary["written_by_class"] == {"cat": {"train": 3, "eval": 1},
                                           "dog": {"train": 1, "eval": 2}}
    assert summary["quarantined_by_reason"] == {images.NOT_AN_IMAGE: 1, images.UNDECODABLE: 1}
    # not_an_image is not an image file: 1 rejected of 8 image files
    assert summary["rejected_share_counts"] == {"rejected": 1, "image_files": 8}
    assert summary["classes_without_examples"] == ["owl"]
    assert summary["empty_folders"] == ["bird"]
    assert summary["accepted_notes"] == {"cmyk": 1}
    assert summary["spans"] == [3]


def test_checks_name_the_setting_that_failed():
    summary = summarize(_tally(), ["cat", "dog"], DataConfig(), SPLITS, [3])
    assert problems(summary, DataConfig(), "q.csv") == ["12.5% of 8 image files rejected "
                                                        "(undecodable 1), above data.max_rejected_share "
                                                        "5.0%; see q.csv"]
    lenient = DataConfig(max_rejected_share=0.2, min_images_per_class=4)
    assert problems(summary, lenient, "q.csv") == [
        "class 'dog' has 3 usable image(s), fewer than data.min_images_per_class 4"]
    one_class = summarize(Tally(), [], lenient, SPLITS, [])
    assert problems(one_class, lenient, "q.csv") == [
        "0 class with usable images (none): a classifier needs at least 2; see q.csv"]
