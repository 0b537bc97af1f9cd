"""The pusher node: a blessed model becomes the next TF Serving version, once.

TFX's stock Pusher versions by timestamp, copies in place and writes no warmup; this one writes
through serving.layout (integer versions, temp dir then rename), adds TF Serving warmup requests
built from real eval images, a metadata.json and the gate's verdict, recognises a model it
already pushed (a cached re-run publishes no duplicate), and retires old versions.
"""
import os

from absl import logging
from tfx import v1 as tfx
from tfx.v1.dsl.components import InputArtifact, OutputArtifact, Parameter
from tfx.v1.types.standard_artifacts import Examples, Model, ModelBlessing, ModelEvaluation, PushedModel
from tlpipe.components import features, storage
from tlpipe.components.evaluator import verdict as verdict_lib
from tlpipe.components.pusher.warmup import warmup_records
from tlpipe.serving import layout

SERVING_SUBDIR = "Format-Serving"  # where the Trainer writes the serving SavedModel


def _model_info(saved_model_dir: str) -> dict:
    return storage.read_json(os.path.join(saved_model_dir, features.MODEL_INFO_FILE))


def _eval_image_files(examples: Examples) -> list[str]:
    return storage.glob(os.path.join(examples.uri, f"Split-{features.EVAL_SPLIT}", "*"))


@tfx.dsl.components.component
def ServingPusher(model: InputArtifact[Model], model_blessing: InputArtifact[ModelBlessing],
                  evaluation: InputArtifact[ModelEvaluation], examples: InputArtifact[Examples],
                  pushed_model: OutputArtifact[PushedModel], serving_model_dir: Parameter[str],
                  model_name: Parameter[str], keep_versions: Parameter[int],
                  warmup_requests: Parameter[int]):
    source = os.path.join(model.uri, SERVING_SUBDIR)
    info = _model_info(source)
    blessed = bool(model_blessing.get_int_custom_property("blessed"))
    verdict = verdict_lib.build_verdict(evaluation.uri, blessed, info["class_names"])
    verdict_lib.write_verdict(verdict, pushed_model.uri)
    pushed_model.set_int_custom_property("newly_pushed", 0)
    if not blessed:
        logging.warning("pusher: model %s is not blessed; nothing pushed", model.uri)
        pushed_model.set_int_custom_property("pushed", 0)
        return
    version = layout.find_pushed(serving_model_dir, model.uri)
    if version is None:
        metadata = {
            "source_model_uri": model.uri, "model_artifact_id": model.id,
            "model_blessing_uri": model_blessing.uri, "evaluation_uri": evaluation.uri,
            "data_span": examples.span, "base": info["base"],
            "hyperparameters": info["hyperparameters"], "label_vocabulary": info["class_names"],
            "metrics": verdict["overall"], "per_class": verdict["per_class"],
            "confusion_matrix": verdict["confusion_matrix"], "calibration": verdict["calibration"],
            "verdict": {"blessed": blessed, "first_run": verdict["first_run"],
                        "checks": verdict["checks"]},
            "training": {k: info[k] for k in ("phase1_epochs", "phase2_epochs",
                                              "phase2_learning_rate", "training_seconds")},
        }
        extra = {features.VERDICT_HTML: storage.read_bytes(
            os.path.join(pushed_model.uri, features.VERDICT_HTML))}
        if warmup_requests > 0:
            extra[features.WARMUP_FILE] = warmup_records(
                _eval_image_files(examples), model_name, warmup_requests)
        version = layout.push(source, serving_model_dir, metadata, extra_files=extra)
        logging.info("pusher: pushed %s as version %d", source, version.number)
        pushed_model.set_int_custom_property("newly_pushed", 1)
        retired = layout.retire_old_versions(serving_model_dir, keep_versions)
        if retired:
            logging.info("pusher: retired versions %s (keeping %d)", retired, keep_versions)
    else:
        logging.info("pusher: model already serving as version %d; not pushed again",
                     version.number)
    pushed_model.set_int_custom_property("pushed", 1)
    pushed_model.set_string_custom_property("pushed_destination", version.path)
    pushed_model.set_int_custom_property("pushed_version", version.number)
