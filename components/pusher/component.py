"""The pusher node: a blessed model becomes the next TF Serving version, once.

TFX's stock Pusher versions by timestamp and copies in place; this one writes through
serving.layout (atomic rename, integer versions) and recognises a model it already pushed, so
a cached re-run does not publish a duplicate version.
"""

import os

from absl import logging
from tfx import v1 as tfx
from tfx.v1.dsl.components import InputArtifact, OutputArtifact, Parameter
from tfx.v1.types.standard_artifacts import Model, ModelBlessing, PushedModel

from serving import layout

SERVING_SUBDIR = "Format-Serving"  # where the Trainer writes the serving SavedModel


@tfx.dsl.components.component
def ServingPusher(model: InputArtifact[Model], model_blessing: InputArtifact[ModelBlessing],
                  pushed_model: OutputArtifact[PushedModel], serving_model_dir: Parameter[str]):
    if not model_blessing.get_int_custom_property("blessed"):
        logging.warning("pusher: model %s is not blessed; nothing pushed", model.uri)
        pushed_model.set_int_custom_property("pushed", 0)
        return
    source = os.path.join(model.uri, SERVING_SUBDIR)
    version = layout.find_pushed(serving_model_dir, model.uri)
    if version is None:
        version = layout.push(source, serving_model_dir, {
            "source_model_uri": model.uri, "model_blessing_uri": model_blessing.uri})
        logging.info("pusher: pushed %s as version %d", source, version.number)
        pushed_model.set_int_custom_property("newly_pushed", 1)
    else:
        logging.info("pusher: model already serving as version %d; not pushed again",
                     version.number)
        pushed_model.set_int_custom_property("newly_pushed", 0)
    pushed_model.set_int_custom_property("pushed", 1)
    pushed_model.set_string_custom_property("pushed_destination", version.path)
    pushed_model.set_int_custom_property("pushed_version", version.number)
