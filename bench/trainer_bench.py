"""Trainer vs a plain Keras script of the same two-phase recipe, side by side in one run.

Both sides get the same in-memory data (the shared flowers, a deterministic 80/20 split per class:
sorted file names, every 5th held out), decoded and resized once with antialias to the input size,
stored as uint8 and normalized in tf.data per the base's convention; the same base, input size,
batch size, epochs, learning rates, dropout and seed. Neither side augments, early-stops or
validates during fit (the held-out split is evaluated after each phase, outside the timed epochs).

- ours:  `TransferHyperModel(settings, classes, "both")` build + fit (phase 1 frozen base live,
         phase 2 from the registry's boundary with BatchNorm frozen, lr / 10).
- plain: the tutorials' script written inline: base(training=False) frozen, GAP + Dropout + Dense
         softmax, Adam; phase 2 unfreezes the same boundary layer and up, BatchNorm frozen,
         Adam at lr / 10. The base comes from the same registry constructor (for keras.applications
         bases that *is* keras.applications.X; EfficientNet-Lite0 has no keras.applications entry).

Prints held-out accuracy after each phase, training images/second per phase (train images x
epochs / summed epoch time, so tracing is in, evaluation is not) and ours/plain ratios.

    KERAS_HOME=../shared/keras_home .venv/bin/python bench/trainer_bench.py \
        [--base efficientnet_lite0] [--size 224] [--batch 32] [--phase1-epochs 8] \
        [--phase2-epochs 6] [--limit N] [--order ours,plain] [--json out.json]

Issue 5's target: accuracy at least the plain script's, images/second at least 0.9x.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "tf_flowers"
if not os.environ.get("KERAS_HOME") and (REPO.parent / "shared" / "keras_home").is_dir():
    os.environ["KERAS_HOME"] = str(REPO.parent / "shared" / "keras_home")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import logging as absl_logging  # noqa: E402
from tlpipe.components.config import ModelSettings, PipelineConfig  # noqa: E402
from tlpipe.components.trainer import fit, search_space  # noqa: E402
from tlpipe.components.trainer.backbones import BACKBONES, CONVENTIONS, build_base  # noqa: E402

SEED = 42
LEARNING_RATE = 1e-3
DROPOUT = 0.2


# ------------------------------------------------------------------ data (shared by both benches)
def split_files(root: str, limit: int | None) -> tuple[list[str], list[tuple[str, int, str]]]:
    """Class names and (path, label, split) rows: per class, sorted names, the first `limit`,
    every 5th (index % 5 == 4) held out."""
    names = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    rows = []
    for label, name in enumerate(names):
        files = sorted(os.listdir(os.path.join(root, name)))[:limit]
        for i, file in enumerate(files):
            rows.append((os.path.join(root, name, file), label, "eval" if i % 5 == 4 else "train"))
    return names, rows


def load_arrays(rows, size: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Decode + antialiased resize to `size`, rounded to uint8 (as stored pixels are)."""
    out: dict[str, tuple[list, list]] = {"train": ([], []), "eval": ([], [])}
    for path, label, split in rows:
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image = tf.image.resize(image, (size, size), antialias=True)
        out[split][0].append(np.clip(np.round(image.numpy()), 0, 255).astype(np.uint8))
        out[split][1].append(label)
    return {k: (np.stack(x), np.array(y, np.int64)) for k, (x, y) in out.items()}


def normalizer(base: str):
    mean, std, bgr = CONVENTIONS[BACKBONES[base].preprocessing]
    mean, std = tf.constant(mean, tf.float32), tf.constant(std, tf.float32)

    def normalize(x, y):
        x = (tf.cast(x, tf.float32) - mean) / std
        return (x[..., ::-1] if bgr else x), y
    return normalize


def dataset(arrays, base: str, batch: int, shuffle: bool) -> tf.data.Dataset:
    """One epoch of (normalized image, label) batches from in-memory uint8 arrays."""
    images, labels = arrays
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle:
        ds = ds.shuffle(len(labels), seed=SEED, reshuffle_each_iteration=True)
    return ds.batch(batch).map(normalizer(base), num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def load(args) -> tuple[list[str], dict]:
    names, rows = split_files(args.data, args.limit)
    started = time.time()
    arrays = load_arrays(rows, args.size)
    print(f"data: {len(rows)} images ({len(arrays['train'][1])} train / {len(arrays['eval'][1])} "
          f"held out), {len(names)} classes, decoded + resized to {args.size} in "
          f"{time.time() - started:.0f}s", flush=True)
    return names, arrays


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def load_avg() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


class PhaseProbe(keras.callbacks.Callback):
    """Sums epoch durations (the training images/s) and, at the end of each fit, evaluates the
    held-out split (outside the timed epochs)."""

    def __init__(self, heldout: tf.data.Dataset):
        super().__init__()
        self.heldout, self.phases = heldout, []
        self._epoch_start = 0.0

    def on_train_begin(self, logs=None):
        self.phases.append({"epochs": 0, "epoch_seconds": 0.0, "per_epoch": [],
                            "load_begin": load_avg()})

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._epoch_start
        self.phases[-1]["epoch_seconds"] += seconds
        self.phases[-1]["per_epoch"].append(round(seconds, 2))
        self.phases[-1]["epochs"] += 1

    def on_train_end(self, logs=None):
        started = time.perf_counter()
        result = self.model.evaluate(self.heldout, verbose=0, return_dict=True)
        self.phases[-1].update(heldout_accuracy=float(result["accuracy"]),
                               eval_seconds=time.perf_counter() - started,
                               load_end=load_avg())


def settings_for(base: str, size: int, batch: int, weights: str = "imagenet") -> ModelSettings:
    config = PipelineConfig()
    config.base.name = base
    config.base.weights = weights
    config.tuner.input_sizes = [size]        # storage size == input size: no resize layer
    config.trainer.batch_size = batch
    config.trainer.phase1_learning_rate = LEARNING_RATE
    config.trainer.phase2_learning_rate = None  # lr / 10
    config.trainer.dropout = DROPOUT
    config.trainer.augment = False
    config.trainer.early_stopping_patience = 0
    config.trainer.seed = SEED
    return config.model_settings()


# ------------------------------------------------------------------ the two sides
def run_ours(args, arrays, num_classes: int) -> dict:
    settings = settings_for(args.base, args.size, args.batch, args.weights)
    hypermodel = fit.TransferHyperModel(settings, num_classes, "both")
    hp = search_space.search_space(settings)  # defaults: the size, lr 1e-3
    started = time.perf_counter()
    model = hypermodel.build(hp)
    build_seconds = time.perf_counter() - started
    probe = PhaseProbe(dataset(arrays["eval"], args.base, args.batch, False))
    hypermodel.fit(hp, model, dataset(arrays["train"], args.base, args.batch, True),
                   epochs=args.phase1_epochs, phase2_epochs=args.phase2_epochs, callbacks=[probe])
    wall = time.perf_counter() - started
    return {"build_seconds": build_seconds, "wall_seconds": wall, "phases": probe.phases,
            "record": {k: v for k, v in hypermodel.record.items() if k != "history"}}


def run_plain(args, arrays, num_classes: int) -> dict:
    keras.utils.set_random_seed(SEED)
    started = time.perf_counter()
    base = build_base(BACKBONES[args.base], args.weights, args.size)
    base.trainable = False
    inputs = keras.Input((args.size, args.size, 3))
    x = base(inputs, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(DROPOUT, seed=SEED)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    build_seconds = time.perf_counter() - started
    probe = PhaseProbe(dataset(arrays["eval"], args.base, args.batch, False))
    train = dataset(arrays["train"], args.base, args.batch, True)
    model.fit(train, epochs=args.phase1_epochs, callbacks=[probe], verbose=0)

    boundary = BACKBONES[args.base].fine_tune_at
    names = [layer.name for layer in base.layers]
    start = names.index(boundary)
    base.trainable = True
    for i, layer in enumerate(base.layers):
        layer.trainable = i >= start and not isinstance(layer, keras.layers.BatchNormalization)
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE / 10),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train, epochs=args.phase1_epochs + args.phase2_epochs,
              initial_epoch=args.phase1_epochs, callbacks=[probe], verbose=0)
    wall = time.perf_counter() - started
    return {"build_seconds": build_seconds, "wall_seconds": wall, "phases": probe.phases,
            "boundary": boundary,
            "trainable_layers": sum(1 for layer in base.layers if layer.trainable)}


def summarize(result: dict, train_images: int) -> dict:
    for phase in result["phases"]:
        phase["images_per_second"] = train_images * phase["epochs"] / phase["epoch_seconds"]
        later = phase["per_epoch"][1:]  # without the first epoch (tf.function tracing)
        phase["steady_images_per_second"] = (train_images * len(later) / sum(later)
                                             if later else None)
    return result


def ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}" if b else "n/a"


def print_table(ours: dict, plain: dict) -> None:
    print("\n| phase | metric | ours | plain | ours/plain |\n|---|---|---|---|---|")
    for i, phase in enumerate(("phase 1 (frozen)", "phase 2 (fine-tune)")):
        o, p = ours["phases"][i], plain["phases"][i]
        oa, pa = o["heldout_accuracy"], p["heldout_accuracy"]
        oi, pi = o["images_per_second"], p["images_per_second"]
        print(f"| {phase} | held-out accuracy | {oa:.4f} | {pa:.4f} | {ratio(oa, pa)} |")
        print(f"| {phase} | train images/s | {oi:.1f} | {pi:.1f} | {ratio(oi, pi)} |")
        if o["steady_images_per_second"] and p["steady_images_per_second"]:
            os_, ps = o["steady_images_per_second"], p["steady_images_per_second"]
            print(f"| {phase} | train images/s, epochs 2+ (no tracing) | {os_:.1f} | {ps:.1f} | "
                  f"{ratio(os_, ps)} |")
        print(f"| {phase} | epoch seconds (sum) | {o['epoch_seconds']:.0f} | "
              f"{p['epoch_seconds']:.0f} | |")
        print(f"| {phase} | load avg begin -> end | {o['load_begin']} -> {o['load_end']} | "
              f"{p['load_begin']} -> {p['load_end']} | |")
    print(f"| all | wall seconds (build + fit + evals) | {ours['wall_seconds']:.0f} | "
          f"{plain['wall_seconds']:.0f} | {ratio(ours['wall_seconds'], plain['wall_seconds'])} |")


def verdict(ours: dict, plain: dict) -> list[str]:
    lines = []
    for i, phase in enumerate(("phase 1", "phase 2")):
        o, p = ours["phases"][i], plain["phases"][i]
        acc_ok = o["heldout_accuracy"] >= p["heldout_accuracy"]
        speed = o["images_per_second"] / p["images_per_second"]
        lines.append(f"{phase}: accuracy {'MET' if acc_ok else 'NOT met'} "
                     f"({o['heldout_accuracy']:.4f} vs {p['heldout_accuracy']:.4f}); "
                     f"images/s {'MET' if speed >= 0.9 else 'NOT met'} ({speed:.2f}x, target 0.9x)")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--base", default="efficientnet_lite0", choices=sorted(BACKBONES))
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--phase1-epochs", type=int, default=8)
    parser.add_argument("--phase2-epochs", type=int, default=6)
    parser.add_argument("--limit", type=int, default=None, help="images per class (first N sorted)")
    parser.add_argument("--order", default="ours,plain", help="which side runs first")
    parser.add_argument("--json", default=None, help="write all figures here")
    args = parser.parse_args(argv)
    absl_logging.set_verbosity(absl_logging.WARNING)
    tf.get_logger().setLevel("ERROR")
    warnings.filterwarnings("ignore", message=".*shuffle=True.*")

    print(f"start: {uptime()}  (cores: {os.cpu_count()})")
    print(f"settings: base={args.base} size={args.size} batch={args.batch} "
          f"epochs={args.phase1_epochs}+{args.phase2_epochs} lr={LEARNING_RATE} (phase 2: /10) "
          f"dropout={DROPOUT} limit={args.limit} augmentation=off early_stopping=off "
          f"validation_during_fit=off seed={SEED}", flush=True)
    names, arrays = load(args)
    train_images = len(arrays["train"][1])
    results = {}
    for side in args.order.split(","):
        print(f"{side}: starting; {uptime()}", flush=True)
        run = run_ours if side == "ours" else run_plain
        results[side] = summarize(run(args, arrays, len(names)), train_images)
        for i, phase in enumerate(results[side]["phases"], 1):
            print(f"{side}: phase {i}: {phase['epochs']} epochs, {phase['epoch_seconds']:.0f}s, "
                  f"{phase['images_per_second']:.1f} images/s, held-out accuracy "
                  f"{phase['heldout_accuracy']:.4f}", flush=True)
        print(f"{side}: done in {results[side]['wall_seconds']:.0f}s; {uptime()}", flush=True)
        keras.backend.clear_session()
    print_table(results["ours"], results["plain"])
    print()
    for line in verdict(results["ours"], results["plain"]):
        print(line)
    print(f"end: {uptime()}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "train_images": train_images,
                       "heldout_images": len(arrays["eval"][1]), **results}, fh, indent=2,
                      default=str)


if __name__ == "__main__":
    main()
