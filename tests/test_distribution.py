"""trainer.distribution=mirrored on two logical CPU devices: the MirroredStrategy code path the
trainer runs on GPUs (build, compile both phases and fit inside the strategy's scope), for real.

Logical devices must be set before TensorFlow initializes, so the training runs in a fresh
process."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from conftest import REPO

SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, "tests")
    import numpy as np
    import pytest
    from conftest import image_batches, model_settings, normalized_images
    from tlpipe.components.trainer import distribution, network, search_space
    from tlpipe.components.trainer.fit import TransferHyperModel

    settings = model_settings(distribution="mirrored",
                              phase2_epochs=1, label_smoothing=0.1)
    strategy = distribution.strategy_for(settings)
    batch = distribution.global_batch_size(settings, strategy)
    images, labels = normalized_images(n=32)
    hp = search_space.search_space(settings)
    with strategy.scope():
        hypermodel = TransferHyperModel(settings, 3, "both", train_examples=32, batch_size=batch)
        model = hypermodel.build(hp)
        hypermodel.fit(hp, model, image_batches(images, labels, batch),
                       validation_data=image_batches(images, labels, batch), epochs=1,
                       phase2_epochs=1)
    variable = network.head_of(model).trainable_weights[0]
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync, "devices": distribution.devices_of(strategy),
        "global_batch": batch, "mirrored": type(variable.value).__name__,
        "phases": sorted(k for k in hypermodel.record if k.startswith("phase")),
        "losses": [float(x) for x in hypermodel.record["history"]["loss"]],
    }))
""")


def test_mirrored_strategy_trains_both_phases_on_two_logical_cpus():
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2 and len(report["devices"]) == 2, report
    assert report["global_batch"] == 16  # 8 per replica
    assert "Mirrored" in report["mirrored"], report
    assert report["phases"] == ["phase1", "phase2"]
    assert len(report["losses"]) == 2 and all(0 < x < 10 for x in report["losses"])
