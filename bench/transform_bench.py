"""Transform throughput and storage: TFX's Transform executor vs plain tf.data, in one run.

Both read the same raw examples (written by the real ingest executor, gzipped TFRecords) and do
decode + resize to the storage size + mean subtraction; the plain side only drains the tensors,
Transform also analyzes (vocabulary; with `--mean-source dataset` a full mean pass, which the
plain side then makes as a separate pass too) and writes its gzipped examples. Prints images/s
for each and their ratio, the fixed per-run cost (measured on 2 images per class) and the
marginal rate beyond it, and bytes on disk of the transformed examples vs the raw ones.

    .venv/bin/python bench/transform_bench.py [--data DIR] [--limit N] [--size 224] [--repeat 1]

Default data: ../shared/datasets/tf_flowers (1,500 photos). The issue's targets: Transform (Beam
in_memory) at least 0.5x the plain throughput, transformed data at most 2x the raw size.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import tensorflow as tf  # noqa: E402
from absl import logging as absl_logging  # noqa: E402
from tlpipe.components import features  # noqa: E402
from tlpipe.components.config import PipelineConfig, TransformConfig, TransformSettings  # noqa: E402
from tlpipe.components.ingest.local import run_ingest  # noqa: E402
from tlpipe.components.trainer.backbones import BACKBONES, CONVENTIONS  # noqa: E402
from tlpipe.components.transform.local import run_transform, write_raw_schema  # noqa: E402
from tlpipe.components.transform.preprocessing import RESIZERS  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "tf_flowers"
BATCH = 32
TARGET_SPEED, TARGET_SIZE = 0.5, 2.0  # issue 4


def subset(root: str, per_class: int | None, dest: str) -> str:
    """Symlinks to the first `per_class` images of each class (all when None)."""
    for class_name in sorted(os.listdir(root)):
        folder = os.path.join(root, class_name)
        if os.path.isdir(folder):
            os.makedirs(os.path.join(dest, class_name))
            for name in sorted(os.listdir(folder))[:per_class]:
                os.symlink(os.path.join(folder, name), os.path.join(dest, class_name, name))
    return dest


def plain_tf_data(files: list[str], train_files: list[str], size: int, resize: str,
                  conv_mean, dataset_mean: bool) -> int:
    """What one writes by hand: read, parse, decode, resize, subtract the mean. Returns count."""
    resizer = RESIZERS[resize]

    def pixels(record):
        data = tf.io.parse_single_example(
            record, {features.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})
        image = tf.io.decode_image(data[features.IMAGE_KEY], channels=3, expand_animations=False)
        return resizer(image, size)

    def images(paths):
        return tf.data.TFRecordDataset(paths, compression_type="GZIP",
                                       num_parallel_reads=tf.data.AUTOTUNE).map(
            pixels, num_parallel_calls=tf.data.AUTOTUNE)

    mean = tf.constant(conv_mean, tf.float32)
    if dataset_mean:  # a separate full pass over the train split, as TFT's analyzer makes
        total = images(train_files).map(lambda x: tf.reduce_mean(x, axis=[0, 1])).batch(
            BATCH).reduce((tf.zeros([3]), 0.0), lambda acc, m: (
                acc[0] + tf.reduce_sum(m, 0), acc[1] + tf.cast(tf.shape(m)[0], tf.float32)))
        mean = total[0] / total[1]
    count = 0
    for batch in images(files).map(lambda x: x - mean).batch(BATCH).prefetch(2):
        count += int(batch.shape[0])
    return count


def du(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def raw_split_files(examples_uri: str, splits: list[str]) -> dict[str, list[str]]:
    return {s: tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{s}", "*")) for s in splits}


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--limit", type=int, default=None, help="images in all (split evenly "
                        "over the classes); default every image")
    parser.add_argument("--size", type=int, default=224, help="storage size (px)")
    parser.add_argument("--base", default="mobilenet_v2")
    parser.add_argument("--mean-source", default="imagenet", choices=("imagenet", "dataset"))
    parser.add_argument("--resize", default="stretch", choices=sorted(RESIZERS))
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the best counts")
    parser.add_argument("--statistics", action="store_true",
                        help="also time Transform with its pre/post-transform statistics on")
    args = parser.parse_args()
    absl_logging.set_verbosity(absl_logging.ERROR)
    if not os.path.isdir(args.data):
        print(f"no data at {args.data}", file=sys.stderr)
        return 2
    classes = [c for c in os.listdir(args.data) if os.path.isdir(os.path.join(args.data, c))]
    per_class = None if args.limit is None else max(2, args.limit // len(classes))
    transform = TransformConfig(mean_source=args.mean_source, resize=args.resize)
    custom_config = {"settings": TransformSettings(transform=transform, base_name=args.base,
                                                   storage_size=args.size).to_dict()}
    conv_mean = CONVENTIONS[BACKBONES[args.base].preprocessing][0]
    config = PipelineConfig()
    splits = ["train", "eval"]
    work = tempfile.mkdtemp(prefix="transform_bench_")
    try:
        load_before = os.getloadavg()
        raw = {name: run_ingest(config, subset(args.data, count, os.path.join(work, name)),
                                os.path.join(work, f"raw_{name}")).examples_uri
               for name, count in (("full", per_class), ("small", 2))}
        schema = write_raw_schema(os.path.join(work, "schema"))
        best: dict[str, dict[str, float]] = {"full": {}, "small": {}}
        transformed: dict[str, str] = {}  # label -> transformed examples URI (full run)

        def plain(name, out=None):
            files = raw_split_files(raw[name], splits)
            return plain_tf_data([f for s in splits for f in files[s]], files["train"],
                                 args.size, args.resize, conv_mean,
                                 args.mean_source == "dataset")

        def transform(disable_statistics):
            return lambda name, out: run_transform(raw[name], splits, schema, out, custom_config,
                                                   config.beam_pipeline_args(),
                                                   disable_statistics).transformed_examples_uri

        sides = {"plain tf.data": plain, "Transform (in_memory)": transform(True)}
        if args.statistics:  # what the pipeline's Transform does unless told otherwise
            sides["Transform + statistics"] = transform(False)
        # Also the warm-up (TF kernels, page cache); counts the examples ingest wrote
        # (byte-identical duplicates are quarantined, not written).
        n_images = {name: plain(name) for name in raw}
        for r in range(args.repeat):  # interleaved, so background load hits every side alike
            for name in ("full", "small"):
                for i, (label, side) in enumerate(sides.items()):
                    out = os.path.join(work, f"out_{name}_{i}_{r}")
                    seconds, result = _timed(lambda side=side, name=name, out=out: side(name, out))
                    best[name][label] = min(best[name].get(label, 1e9), seconds)
                    if name == "full" and label != "plain tf.data":
                        transformed[label] = result

        n, n_small = n_images["full"], n_images["small"]
        print(f"{n} images from {args.data}, {args.size} px, resize {args.resize}, "
              f"mean {args.mean_source} ({args.base}); {os.cpu_count()} cores; "
              f"best of {args.repeat}; fixed cost measured on {n_small} images")
        print(f"load average (1, 5, 15 min) before: {load_before}, after: {os.getloadavg()}")
        base_rate = n / best["full"]["plain tf.data"]
        base_marginal = (n - n_small) / max(best["full"]["plain tf.data"]
                                             - best["small"]["plain tf.data"], 1e-9)
        print(f"{'what':24s} {'seconds':>8s} {'images/s':>9s} {'vs plain':>9s} {'fixed s':>8s} "
              f"{'marginal/s':>11s} {'vs plain':>9s}")
        for label in sides:
            seconds, fixed = best["full"][label], best["small"][label]
            rate, marginal = n / seconds, (n - n_small) / max(seconds - fixed, 1e-9)
            print(f"{label:24s} {seconds:8.2f} {rate:9.1f} {rate / base_rate:8.2f}x "
                  f"{fixed:8.2f} {marginal:11.1f} {marginal / base_marginal:8.2f}x")
        raw_bytes = du(raw["full"])
        ours = du(transformed["Transform (in_memory)"])
        print(f"bytes on disk: raw examples {raw_bytes:,} ({raw_bytes / n:,.0f}/image), "
              f"transformed {ours:,} ({ours / n:,.0f}/image): {ours / raw_bytes:.2f}x raw")
        print(f"targets: Transform >= {TARGET_SPEED}x plain throughput "
              f"(measured {n / best['full']['Transform (in_memory)'] / base_rate:.2f}x), "
              f"transformed <= {TARGET_SIZE}x raw size (measured {ours / raw_bytes:.2f}x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
