"""Cached vs live frozen-base features: a learning-rate search, then phase 1 + phase 2, in one run.

For each `trainer.phase1_features` mode (`live`, `cached`), on the same in-memory data as
bench/trainer_bench.py (the shared flowers, 80/20 per class by sorted name, every 5th held out;
decoded + antialiased resize once; uint8, normalized in tf.data per the base's convention):

1. tuning: a KerasTuner RandomSearch from `components/tuner/tuner_module.make_tuner` over the
   phase-1 learning rate at one input size (`--trials` trials of `--trial-epochs` epochs, phase 1
   only, as `tuner.tune_phases=phase1`), the held-out split as validation data (as the pipeline
   validates on its eval split). Same tuner seed in both modes, so both try the same rates.
2. training with the best rate: `TransferHyperModel(..., "both")` phase 1 then phase 2 (phase 2
   always live), validation on the held-out split each epoch (as the Trainer's run_fn does),
   held-out accuracy measured after each phase (outside the timed part).

`cached` uses a `FeatureCache` in a fresh folder, so its one pass of the base over both splits is
inside the tuning time; the final phase 1 reuses it from memory. Augmentation follows
`--augment` (default on: the product default, so `live` augments in phase 1 and both modes
augment in phase 2; `cached` cannot augment phase 1). Early stopping is off (same epochs).

    KERAS_HOME=../shared/keras_home .venv/bin/python bench/features_bench.py \
        [--base efficientnet_lite0] [--size 224] [--batch 32] [--phase1-epochs 8] \
        [--phase2-epochs 6] [--trials 6] [--trial-epochs 2] [--limit N] [--augment on|off] \
        [--order live,cached] [--json out.json]

Issue 11's target: tuning at least 5x faster with cached features, held-out accuracy after
phase 2 within 1 point of the live path.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
import trainer_bench as tb  # noqa: E402  (sets sys.path, KERAS_HOME, TF log level)
from absl import logging as absl_logging  # noqa: E402
from tlpipe.components import features  # noqa: E402
from tlpipe.components.trainer import feature_cache, fit  # noqa: E402
from tlpipe.components.trainer.backbones import BACKBONES  # noqa: E402
from tlpipe.components.tuner import tuner_module  # noqa: E402


def settings_for(args, mode: str):
    settings = tb.settings_for(args.base, args.size, args.batch, args.weights)
    settings.trainer = settings.trainer.replace(
        phase1_features=mode, augment=args.augment == "on", phase1_epochs=args.phase1_epochs,
        phase2_epochs=args.phase2_epochs)
    settings.tuner = settings.tuner.replace(
        max_trials=args.trials, epochs_per_trial=args.trial_epochs, algorithm="random",
        tune_phases="phase1", input_sizes=[args.size], max_seconds=None, max_failed_trials=0)
    return settings


def run_mode(args, mode: str, arrays, num_classes: int, work: str) -> dict:
    settings = settings_for(args, mode)
    train = lambda shuffle: tb.dataset(arrays["train"], args.base, args.batch, shuffle)  # noqa
    heldout = lambda: tb.dataset(arrays["eval"], args.base, args.batch, False)  # noqa
    cache = None
    if mode == "cached":
        identity = {"data": os.path.abspath(args.data), "limit": args.limit, "split": "every-5th",
                    "resize": "antialias-bilinear"}
        cache = feature_cache.FeatureCache(os.path.join(work, "feature_cache"), identity,
                                       {features.TRAIN_SPLIT: lambda: train(False),
                                        features.EVAL_SPLIT: heldout}, settings)
    out: dict = {"mode": mode, "load_begin": tb.load_avg()}

    # 1. the learning-rate search
    # cached: head-only trials, as tuner_fn runs them (no base built per trial)
    hypermodel = fit.TransferHyperModel(settings, num_classes, "phase1", feature_cache=cache,
                                        head_only=cache is not None)
    tuner = tuner_module.make_tuner(hypermodel, settings, os.path.join(work, f"search_{mode}"))
    started = time.perf_counter()
    if cache is not None:
        tuner.search(x=None, epochs=args.trial_epochs, label="tuner", verbose=0)
    else:
        tuner.search(x=train(True), validation_data=heldout(), epochs=args.trial_epochs,
                     label="tuner", verbose=0)
    out["tuning_seconds"] = time.perf_counter() - started
    out["trials"] = [{"lr": r["hyperparameters"][features.HP_LEARNING_RATE],
                      "val_accuracy": r["score"], "seconds": r["seconds"], "status": r["status"]}
                     for r in tuner.trial_rows]
    best = tuner.get_best_hyperparameters()[0]
    out["best_learning_rate"] = float(best.get(features.HP_LEARNING_RATE))
    out["load_after_tuning"] = tb.load_avg()
    if cache is not None:
        out["feature_cache"] = dict(cache.stats)
    del tuner
    keras.backend.clear_session()

    # 2. phase 1 + phase 2 at the best rate
    hypermodel = fit.TransferHyperModel(settings, num_classes, "both", feature_cache=cache)
    probe = tb.PhaseProbe(heldout())
    started = time.perf_counter()
    model = hypermodel.build(best)
    hypermodel.fit(best, model, train(True), validation_data=heldout(),
                   epochs=args.phase1_epochs, phase2_epochs=args.phase2_epochs, callbacks=[probe])
    out["train_wall_seconds"] = time.perf_counter() - started
    record = hypermodel.record
    for i, phase in enumerate(("phase1", "phase2")):
        measured = probe.phases[i]
        out[phase] = {"epochs": record[phase]["epochs"],
                      # the phase's wall time minus the held-out evaluation the probe added
                      "seconds": record[phase]["seconds"] - measured["eval_seconds"],
                      "heldout_accuracy": measured["heldout_accuracy"],
                      "per_epoch": measured["per_epoch"]}
    out["load_end"] = tb.load_avg()
    out["tuning_plus_phase1_seconds"] = out["tuning_seconds"] + out["phase1"]["seconds"]
    out["total_seconds"] = out["tuning_plus_phase1_seconds"] + out["phase2"]["seconds"]
    del model, hypermodel
    keras.backend.clear_session()
    return out


def print_table(live: dict, cached: dict) -> None:
    def row(name, key, fmt="{:.0f}", sub=None, ratio=True):
        lv = live[sub][key] if sub else live[key]
        cv = cached[sub][key] if sub else cached[key]
        r = f"{lv / cv:.2f}x" if ratio and cv else ""
        print(f"| {name} | {fmt.format(lv)} | {fmt.format(cv)} | {r} |")

    print("\n| figure | live | cached | live/cached |\n|---|---|---|---|")
    row("tuning wall s (6-trial lr search)", "tuning_seconds")
    seconds = {k: ", ".join("{:.0f}".format(t["seconds"]) for t in r["trials"])
               for k, r in (("live", live), ("cached", cached))}
    print(f"| trial seconds | {seconds['live']} | {seconds['cached']} | |")
    print(f"| best lr (trial val acc) | {live['best_learning_rate']:.2g} "
          f"({max(t['val_accuracy'] for t in live['trials']):.3f}) | "
          f"{cached['best_learning_rate']:.2g} "
          f"({max(t['val_accuracy'] for t in cached['trials']):.3f}) | |")
    row("phase 1 wall s", "seconds", sub="phase1")
    row("tuning + phase 1 wall s", "tuning_plus_phase1_seconds")
    row("phase 2 wall s (live in both)", "seconds", sub="phase2")
    row("total wall s", "total_seconds")
    row("held-out accuracy after phase 1", "heldout_accuracy", "{:.4f}", sub="phase1", ratio=False)
    row("held-out accuracy after phase 2", "heldout_accuracy", "{:.4f}", sub="phase2", ratio=False)
    print(f"| load avg begin / after tuning / end | {live['load_begin']} / "
          f"{live['load_after_tuning']} / {live['load_end']} | {cached['load_begin']} / "
          f"{cached['load_after_tuning']} / {cached['load_end']} | |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(tb.DEFAULT_DATA))
    parser.add_argument("--base", default="efficientnet_lite0", choices=sorted(BACKBONES))
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--phase1-epochs", type=int, default=8)
    parser.add_argument("--phase2-epochs", type=int, default=6)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--trial-epochs", type=int, default=2,
                        help="epochs per tuner trial (tuner.epochs_per_trial; default as config)")
    parser.add_argument("--limit", type=int, default=None, help="images per class (first N sorted)")
    parser.add_argument("--augment", choices=("on", "off"), default="on")
    parser.add_argument("--order", default="live,cached")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    absl_logging.set_verbosity(absl_logging.WARNING)
    tf.get_logger().setLevel("ERROR")
    warnings.filterwarnings("ignore", message=".*shuffle=True.*")

    print(f"start: {tb.uptime()}  (cores: {os.cpu_count()})")
    print(f"settings: base={args.base} size={args.size} batch={args.batch} "
          f"trials={args.trials}x{args.trial_epochs} epochs (lr in [1e-4, 1e-2], log, seed 42) "
          f"final epochs={args.phase1_epochs}+{args.phase2_epochs} (phase 2 lr = best / 10) "
          f"limit={args.limit} augment={args.augment} early_stopping=off", flush=True)
    names, arrays = tb.load(args)
    work = tempfile.mkdtemp(prefix="features_bench_")
    results = {}
    try:
        for mode in args.order.split(","):
            print(f"{mode}: starting; {tb.uptime()}", flush=True)
            results[mode] = r = run_mode(args, mode, arrays, len(names), work)
            print(f"{mode}: tuning {r['tuning_seconds']:.0f}s (best lr "
                  f"{r['best_learning_rate']:.2g}), phase 1 {r['phase1']['seconds']:.0f}s "
                  f"-> {r['phase1']['heldout_accuracy']:.4f}, phase 2 "
                  f"{r['phase2']['seconds']:.0f}s -> {r['phase2']['heldout_accuracy']:.4f}; "
                  f"{tb.uptime()}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    live, cached = results["live"], results["cached"]
    print_table(live, cached)
    speedup = live["tuning_seconds"] / cached["tuning_seconds"]
    gap = cached["phase2"]["heldout_accuracy"] - live["phase2"]["heldout_accuracy"]
    print(f"\ntuning speed-up {speedup:.1f}x: {'MET' if speedup >= 5 else 'NOT met'} (target 5x)")
    print(f"phase-2 accuracy cached - live = {gap * 100:+.2f} points: "
          f"{'MET' if gap >= -0.01 else 'NOT met'} (target: within 1 point)")
    print(f"end: {tb.uptime()}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), **results}, fh, indent=2, default=str)


if __name__ == "__main__":
    main()
