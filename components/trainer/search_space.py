"""What the tuner searches and the trainer reads back: input size x learning rates (x dropout).

Each default is what the trainer uses untuned, so a run without the tuner trains the same recipe.
"""
from __future__ import annotations

import keras_tuner
from tlpipe.components.config import ModelSettings
from tlpipe.components.errors import TlpipeError
from tlpipe.components.features import HP_DROPOUT, HP_INPUT_SIZE, HP_LEARNING_RATE, HP_PHASE2_LEARNING_RATE
from tlpipe.components.trainer.backbones import BACKBONES, Backbone
from tlpipe.components.trainer.backbones import min_input_size as base_min_input_size


class InputSizeError(TlpipeError, ValueError):
    """An input size the base plus head cannot take, caught before anything is built."""


def backbone_of(settings: ModelSettings) -> Backbone:
    return BACKBONES[settings.base.name]


def min_input_size(settings: ModelSettings) -> int:
    """The smallest input the base (and the tutorials' pooled head, if chosen) can take."""
    return base_min_input_size(backbone_of(settings), settings.trainer.head)


def check_input_size(settings: ModelSettings, size: int) -> None:
    minimum = min_input_size(settings)
    if size < minimum:
        head = settings.trainer.head
        raise InputSizeError(
            f"input size {size}x{size} is too small for base '{backbone_of(settings).name}' "
            f"with head '{head}': the minimum is {minimum}x{minimum}")


def input_sizes(settings: ModelSettings) -> list[int]:
    """The candidate sizes the base and head can take, ascending (refused if none can)."""
    sizes = sorted(s for s in settings.tuner.input_sizes if s >= min_input_size(settings))
    if not sizes:
        check_input_size(settings, max(settings.tuner.input_sizes))
    return sizes


def search_space(settings: ModelSettings) -> keras_tuner.HyperParameters:
    """Input size x phase-1 learning rate (plus, when configured, the fine-tune rate and the
    dropout); each default is what the trainer uses untuned."""
    backbone, tuner, trainer = backbone_of(settings), settings.tuner, settings.trainer
    sizes = input_sizes(settings)
    default_size = min(sizes, key=lambda s: (abs(s - backbone.default_size), s))
    lo, hi = tuner.learning_rate_min, tuner.learning_rate_max
    hp = keras_tuner.HyperParameters()
    hp.Choice(HP_INPUT_SIZE, sizes, default=default_size)
    hp.Float(HP_LEARNING_RATE, lo, hi, sampling="log",
             default=min(max(trainer.phase1_learning_rate, lo), hi))
    if tuner.tune_phase2_learning_rate:
        hp.Float(HP_PHASE2_LEARNING_RATE, lo / 100, hi / 10, sampling="log",
                 default=phase2_learning_rate(hp, settings, untuned=True))
    if tuner.tune_dropout:
        hp.Float(HP_DROPOUT, 0.0, 0.5, step=0.1, default=trainer.dropout)
    return hp


def phase2_learning_rate(hp: keras_tuner.HyperParameters, settings: ModelSettings,
                         untuned: bool = False) -> float:
    """Tuned, else configured, else the phase-1 (tuned) rate / 10, as the tutorials do."""
    if not untuned and HP_PHASE2_LEARNING_RATE in hp.values:
        return float(hp.get(HP_PHASE2_LEARNING_RATE))
    configured = settings.trainer.phase2_learning_rate
    return configured if configured is not None else float(hp.get(HP_LEARNING_RATE)) / 10


def dropout_of(hp: keras_tuner.HyperParameters, settings: ModelSettings) -> float:
    return float(hp.get(HP_DROPOUT)) if HP_DROPOUT in hp.values else settings.trainer.dropout
