"""Training scale: the tf.distribute strategy the trainer builds, compiles and fits under."""
from __future__ import annotations

import tensorflow as tf
from absl import logging
from tlpipe.components.config import ModelSettings


def strategy_for(settings: ModelSettings) -> tf.distribute.Strategy:
    """MirroredStrategy over the local GPUs (else every logical CPU device) for
    trainer.distribution=mirrored; the default (no-op) strategy otherwise."""
    if settings.trainer.distribution != "mirrored":
        return tf.distribute.get_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    if not gpus:  # said loudly: a GPU was expected
        logging.warning("trainer.distribution=mirrored but TensorFlow sees no GPU (CUDA build "
                        "installed? drivers?); mirroring over the CPU devices instead")
    devices = [d.name for d in gpus or tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=devices)


def devices_of(strategy: tf.distribute.Strategy) -> list[str]:
    """The devices that trained, for the run summary."""
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return list(strategy.extended.worker_devices)
    gpus = tf.config.list_logical_devices("GPU")
    return [gpus[0].name if gpus else tf.config.list_logical_devices("CPU")[0].name]


def global_batch_size(settings: ModelSettings, strategy: tf.distribute.Strategy) -> int:
    return settings.trainer.batch_size * strategy.num_replicas_in_sync
