"""Our own builders of SavedModels that behave like TF Serving's test models.

TF Serving's end-to-end tests run against `saved_model_half_plus_two_*`, `..._half_plus_three`,
`..._2_versions` and `saved_model_counter` (tensorflow_serving/servables/tensorflow/testdata).
Those files are not ours to copy, so these functions rebuild models with the same observable
contract: signature names and methods, input/output keys and dtypes, what they compute
(y = 0.5x + 2, y2 = 0.5x + 3, y3 = 0.5x2 + 3), and version directories like `00000123`.

- `half_plus_two_tf1`: a TF1 graph (SavedModelBuilder); Predict feeds the intermediate tensor
  `x` of shape [-1, 1], the way TF Serving's session does.
- `half_plus_two_tf2`: a tf.Module saved with tf.saved_model.save (every method is predict).
- `half_plus_three_tf1`: TF1, signature shapes recorded as scalars (as old exporters did), so
  `tf.saved_model.load` refuses it and only a session loader serves it.
- `counter_tf1`: stateful signatures with no inputs (get/incr/incr_by/reset).
"""
from __future__ import annotations

import os

import tensorflow as tf

PREDICT = "tensorflow/serving/predict"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
VERSION = 123


def version_dir(base: str | os.PathLike, version: int = VERSION) -> str:
    return os.path.join(os.fspath(base), f"{version:08d}")


def _info(tensor, scalar_shape: bool = False):
    info = tf.compat.v1.saved_model.utils.build_tensor_info(tensor)
    if scalar_shape:
        info.tensor_shape.Clear()  # rank 0 declared: what pre-1.0 exporters wrote
    return info


def _signature(inputs: dict, outputs: dict, method: str, scalar_shape: bool = False):
    return tf.compat.v1.saved_model.signature_def_utils.build_signature_def(
        {k: _info(v, scalar_shape) for k, v in inputs.items()},
        {k: _info(v, scalar_shape) for k, v in outputs.items()}, method)


def _save_tf1(graph, session, path: str, signatures: dict) -> str:
    builder = tf.compat.v1.saved_model.Builder(path)
    with graph.as_default():
        builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures,
                                             strip_default_attrs=True)
    builder.save()
    return path


def _half_plus_tf1(path: str, offset: float, scalar_shapes: bool) -> str:
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        a = tf.compat.v1.Variable(0.5, name="a")
        b = tf.compat.v1.Variable(offset, name="b")
        c = tf.compat.v1.Variable(3.0, name="c")
        serialized = tf.compat.v1.placeholder(tf.string, shape=[None], name="tf_example")
        features = tf.io.parse_example(serialized, {
            "x": tf.io.FixedLenFeature([1], tf.float32),
            "x2": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])})
        x = tf.identity(features["x"], name="x")
        y = tf.identity(a * x + b, name="y")
        y2 = tf.identity(a * x + c, name="y2")
        x2 = tf.identity(features["x2"], name="x2")
        y3 = tf.identity(a * x2 + c, name="y3")
        session.run(tf.compat.v1.global_variables_initializer())
        if scalar_shapes:
            signatures = {
                "serving_default": _signature({"x": x}, {"y": y}, PREDICT, True),
                REGRESS: _signature({"inputs": serialized}, {"outputs": y}, REGRESS, True),
            }
        else:
            signatures = {
                "serving_default": _signature({"x": x}, {"y": y}, PREDICT),
                "regress_x_to_y": _signature({"inputs": serialized}, {"outputs": y}, REGRESS),
                "regress_x_to_y2": _signature({"inputs": serialized}, {"outputs": y2}, REGRESS),
                "regress_x2_to_y3": _signature({"inputs": x2}, {"outputs": y3}, REGRESS),
                "classify_x_to_y": _signature({"inputs": serialized}, {"scores": y}, CLASSIFY),
            }
        return _save_tf1(graph, session, path, signatures)


def half_plus_two_tf1(base: str | os.PathLike, version: int = VERSION) -> str:
    return _half_plus_tf1(version_dir(base, version), 2.0, scalar_shapes=False)


def half_plus_three_tf1(base: str | os.PathLike, version: int = VERSION) -> str:
    return _half_plus_tf1(version_dir(base, version), 3.0, scalar_shapes=True)


class _HalfPlusTwo(tf.Module):
    def __init__(self):
        super().__init__()
        self.a = tf.Variable(0.5)
        self.b = tf.Variable(2.0)
        self.c = tf.Variable(3.0)

    def _parse(self, serialized):
        return tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]

    @tf.function(input_signature=[tf.TensorSpec([1], tf.float32, name="x")])
    def predict(self, x):
        return {"y": self.a * x + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress_xy(self, inputs):
        return {"outputs": self.a * self._parse(inputs) + self.b}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress_xy2(self, inputs):
        return {"outputs": self.a * self._parse(inputs) + self.c}

    @tf.function(input_signature=[tf.TensorSpec([1], tf.float32, name="inputs")])
    def regress_x2y3(self, inputs):
        return {"outputs": self.a * inputs + self.c}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify_xy(self, inputs):
        return {"scores": self.a * self._parse(inputs) + self.b}

    @tf.function(input_signature=[tf.TensorSpec([1], tf.float32, name="inputs")])
    def classify_x2y3(self, inputs):
        return {"scores": self.a * inputs + self.c}


def half_plus_two_tf2(base: str | os.PathLike, version: int = VERSION) -> str:
    module = _HalfPlusTwo()
    path = version_dir(base, version)
    tf.saved_model.save(module, path, signatures={
        "serving_default": module.predict, "regress_x_to_y": module.regress_xy,
        "regress_x_to_y2": module.regress_xy2, "regress_x2_to_y3": module.regress_x2y3,
        "classify_x_to_y": module.classify_xy, "classify_x2_to_y3": module.classify_x2y3})
    return path


def two_versions_tf1(base: str | os.PathLike) -> list[str]:
    return [half_plus_two_tf1(base, VERSION), half_plus_two_tf1(base, VERSION + 1)]


def counter_tf1(base: str | os.PathLike, version: int = VERSION) -> str:
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        counter = tf.compat.v1.Variable(0.0, name="counter", use_resource=False)
        incremented = tf.compat.v1.assign_add(counter, 1.0)
        delta = tf.compat.v1.placeholder(tf.float32, name="delta")
        incremented_by = tf.compat.v1.assign_add(counter, delta)
        reset = tf.compat.v1.assign(counter, 0.0)
        session.run(tf.compat.v1.global_variables_initializer())
        return _save_tf1(graph, session, version_dir(base, version), {
            "get_counter": _signature({}, {"output": counter.value()}, PREDICT),
            "incr_counter": _signature({}, {"output": incremented}, PREDICT),
            "incr_counter_by": _signature({"delta": delta}, {"output": incremented_by}, PREDICT),
            "reset_counter": _signature({}, {"output": reset}, PREDICT),
        })
