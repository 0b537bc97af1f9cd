"""The plain two-phase Keras script the default `tlpipe run` is measured against.

What a careful user writes from the Keras transfer-learning tutorial, with the same base and
weights as tlpipe's default: image_dataset_from_directory (224 px, 80/20 train/validation),
frozen EfficientNet-Lite0 + GlobalAveragePooling + Dropout(0.2) + Dense softmax, Adam 1e-3 for
8 epochs; then the base from block6a up unfrozen (BatchNorm frozen), Adam 1e-4 for 6 epochs. No
tuning, no early stopping. Prints one JSON line: validation and held-out accuracy.

    python bench/plain_keras.py TRAIN_DIR HELDOUT_DIR [--size 224] [--epochs 8,6]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
from tlpipe.components.trainer.efficientnet_lite_build import build_efficientnet_lite0  # noqa: E402

FINE_TUNE_AT = "block6a_expand_conv"
SEED = 42


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train_dir")
    parser.add_argument("heldout_dir")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", default="8,6")
    args = parser.parse_args(argv)
    phase1, phase2 = (int(e) for e in args.epochs.split(","))
    keras.utils.set_random_seed(SEED)
    common = dict(image_size=(args.size, args.size), batch_size=32, seed=SEED)
    train = keras.utils.image_dataset_from_directory(args.train_dir, validation_split=0.2,
                                                     subset="training", **common)
    val = keras.utils.image_dataset_from_directory(args.train_dir, validation_split=0.2,
                                                   subset="validation", **common)
    heldout = keras.utils.image_dataset_from_directory(args.heldout_dir, shuffle=False, **common)
    assert heldout.class_names == train.class_names
    num_classes = len(train.class_names)

    def scale(x, y):
        return (x - 127.0) / 128.0, y

    train, val, heldout = (d.map(scale).prefetch(4) for d in (train, val, heldout))
    base = build_efficientnet_lite0((args.size, args.size, 3), weights="imagenet")
    base.trainable = False
    inputs = keras.Input((args.size, args.size, 3))
    x = base(inputs, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(train, validation_data=val, epochs=phase1, verbose=2)
    base.trainable = True
    start = [layer.name for layer in base.layers].index(FINE_TUNE_AT)
    for i, layer in enumerate(base.layers):
        layer.trainable = i >= start and not isinstance(layer, keras.layers.BatchNormalization)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(train, validation_data=val, epochs=phase1 + phase2, initial_epoch=phase1, verbose=2)
    print(json.dumps({"val_accuracy": float(model.evaluate(val, verbose=0)[1]),
                      "heldout_accuracy": float(model.evaluate(heldout, verbose=0)[1])}))


if __name__ == "__main__":
    main()
