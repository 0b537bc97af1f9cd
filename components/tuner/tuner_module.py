"""TFX Tuner module: `tuner_fn`, KerasTuner over input size x phase-1 learning rate.

It searches the same space (`model.search_space`) and trains the same phase-1 model that the
Trainer's `run_fn` uses, on the frozen base.
"""
from __future__ import annotations

import keras_tuner
import tensorflow_transform as tft
from tfx import v1 as tfx

from components.trainer import model as model_lib


def tuner_fn(fn_args: tfx.components.FnArgs) -> tfx.components.TunerFnResult:
    settings = fn_args.custom_config["settings"]
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    num_classes = len(model_lib.class_names(tf_transform_output))
    tuner = keras_tuner.RandomSearch(
        lambda hp: model_lib.build_model(hp, settings, num_classes),
        hyperparameters=model_lib.search_space(settings),
        objective=keras_tuner.Objective("val_accuracy", "max"),
        max_trials=settings["tuner"]["max_trials"],
        seed=settings["tuner"]["seed"],
        directory=fn_args.working_dir, project_name="search", overwrite=True)

    def dataset(files, shuffle):
        return model_lib.make_dataset(files, fn_args.data_accessor, tf_transform_output,
                                      settings, shuffle)

    return tfx.components.TunerFnResult(tuner=tuner, fit_kwargs={
        "x": dataset(fn_args.train_files, True),
        "validation_data": dataset(fn_args.eval_files, False),
        "epochs": settings["tuner"]["epochs_per_trial"],
        "verbose": 0,
    })
