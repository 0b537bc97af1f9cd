"""The default `tlpipe run` against the plain two-phase Keras script, in one run on one machine.

A held-out part of the shared flowers (per class, sorted names, every `--every`-th photo) is
trained, tuned and stopped on by neither side. Each side gets the rest as class folders
(symlinks): the plain script (bench/plain_keras.py) splits it 80/20 itself; tlpipe splits it
70/15/15 and reports its test-split accuracy. Prints both held-out accuracies, tlpipe's reported
test accuracy, each side's CPU seconds (user + sys of the whole process tree, from the kernel's
accounting of waited-for children) and wall seconds, and the ratios.

    .venv/bin/python bench/pipeline_bench.py [--data ../shared/datasets/tf_flowers] [--every 5]
        [--limit N] [--set key=value ...] [--order plain,tlpipe] [--json out.json]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "tf_flowers"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def split_heldout(data: Path, every: int, limit: int | None, out: Path) -> tuple[Path, Path]:
    """Symlinked class folders: `rest` for training, `heldout` for the final comparison."""
    rest, heldout = out / "rest", out / "heldout"
    for cls in sorted(p for p in data.iterdir() if p.is_dir()):
        files = sorted(p for p in cls.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
        for i, file in enumerate(files):
            target = (heldout if i % every == every - 1 else rest) / cls.name / file.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(file.resolve())
    return rest, heldout


def measured(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float, float]:
    """Runs `cmd`; CPU seconds (user + sys of it and every descendant it waited for) and wall."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.time() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode != 0:
        sys.exit(f"{cmd[:3]} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                 f"{result.stderr[-3000:]}")
    return result, cpu, wall


def heldout_accuracy(saved_model: Path, heldout: Path) -> float:
    """The pushed model's accuracy on the held-out photos, through its serving signature."""
    import tensorflow as tf

    serve = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    correct = total = 0
    for cls in sorted(p for p in heldout.iterdir() if p.is_dir()):
        files = sorted(cls.iterdir())
        for i in range(0, len(files), 32):
            batch = [f.read_bytes() for f in files[i:i + 32]]
            names = serve(image_bytes=tf.constant(batch))["class_name"].numpy()
            correct += sum(n.decode() == cls.name for n in names)
            total += len(batch)
    return correct / total


def uptime() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--limit", type=int, default=None, help="photos per class (smoke runs)")
    parser.add_argument("--set", action="append", default=[], help="extra tlpipe settings")
    parser.add_argument("--plain-epochs", default="8,6")
    parser.add_argument("--order", default="plain,tlpipe")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if not env.get("KERAS_HOME") and (REPO.parent / "shared" / "keras_home").is_dir():
        env["KERAS_HOME"] = str(REPO.parent / "shared" / "keras_home")
    report: dict = {"load_before": uptime(), "command": sys.argv}
    with tempfile.TemporaryDirectory(prefix="tlpipe-bench-") as tmp:
        rest, heldout = split_heldout(Path(args.data), args.every, args.limit, Path(tmp))
        report["heldout_images"] = sum(1 for _ in heldout.rglob("*.*"))
        report["rest_images"] = sum(1 for _ in rest.rglob("*.*"))
        for side in args.order.split(","):
            if side == "plain":
                result, cpu, wall = measured(
                    [sys.executable, str(REPO / "bench" / "plain_keras.py"), str(rest),
                     str(heldout), "--epochs", args.plain_epochs], env)
                scores = json.loads(result.stdout.strip().splitlines()[-1])
                report["plain"] = {"cpu_s": cpu, "wall_s": wall, **scores}
            else:
                work = Path(tmp) / "work"
                sets = [a for s in args.set for a in ("--set", s)]
                result, cpu, wall = measured(
                    [sys.executable, "-m", "tlpipe.pipeline.cli", "run", "--data", str(rest),
                     "--work-dir", str(work), *sets], env)
                test = re.search(r"test accuracy : ([0-9.]+)", result.stdout)
                # The trainer's model, blessed or not (a gate failing is a finding too).
                model = max(work.glob("pipeline/trainer/model/*/Format-Serving"),
                            key=lambda p: int(p.parent.name))
                report["tlpipe"] = {"cpu_s": cpu, "wall_s": wall,
                                    "test_accuracy": float(test.group(1)) if test else None,
                                    "blessed": "blessed       : yes" in result.stdout,
                                    "heldout_accuracy": heldout_accuracy(model, heldout),
                                    "summary": result.stdout[-4000:]}
            report[f"load_after_{side}"] = uptime()
    plain, ours = report.get("plain"), report.get("tlpipe")
    out = io.StringIO()
    print(f"held-out {report['heldout_images']} photos, trained on {report['rest_images']}; load "
          f"{report['load_before']} before", file=out)
    for name, side in (("plain", plain), ("tlpipe", ours)):
        if side:
            extra = (f", reported test accuracy {side['test_accuracy']:.4f}"
                     if side.get("test_accuracy") is not None else
                     f", validation accuracy {side.get('val_accuracy', float('nan')):.4f}")
            print(f"{name:7s} held-out accuracy {side['heldout_accuracy']:.4f}{extra}; "
                  f"CPU {side['cpu_s']:.0f} s, wall {side['wall_s']:.0f} s", file=out)
    if plain and ours:
        print(f"tlpipe / plain: accuracy {ours['heldout_accuracy'] - plain['heldout_accuracy']:+.4f}"
              f", CPU {ours['cpu_s'] / plain['cpu_s']:.2f}x, wall "
              f"{ours['wall_s'] / plain['wall_s']:.2f}x", file=out)
    print(out.getvalue(), end="")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
