"""Transform: decode and resize policies, each base's convention, and train/serve parity.

Parity runs TFX's real Transform executor (components/transform/local.py) on real photos, then
feeds the model both ways: transformed tf.Examples -> `make_dataset` (what Tuner and Trainer
train on) and raw bytes -> TFT layer -> `model_input` (what the exported model serves).
"""
from __future__ import annotations

import importlib
import io

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from conftest import SHARED_FLOWERS
from PIL import Image
from tfx.components.trainer.fn_args_utils import DataAccessor
from tfx.components.util import tfxio_utils
from tfx.types import standard_component_specs as specs
from tlpipe.components import features
from tlpipe.components.config import PipelineConfig, TransformConfig, TransformSettings
from tlpipe.components.trainer import inputs
from tlpipe.components.trainer.backbones import BACKBONES, CONVENTIONS
from tlpipe.components.transform import preprocessing
from tlpipe.components.transform.local import run_transform, write_raw_schema

PHOTOS_PER_CLASS = 4  # 5 classes: 20 photos
SIZE = 96  # any size shows parity; smaller is cheaper to store, serve and compare

# Four vertical bands, 16 px each, on a 64 x 32 (2:1) image.
BANDS = [(220, 20, 20), (20, 200, 20), (20, 20, 220), (240, 240, 240)]


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _halves(shift: int = 0, size: int = 40) -> np.ndarray:
    """Left half reddish, right half greenish (shifted by `shift` grey levels, so every image
    differs): two flat colours a decoder cannot blur away."""
    rgb = np.zeros((size, size, 3), np.uint8)
    rgb[:, : size // 2] = (200 + shift, 30 + shift, 40 + shift)
    rgb[:, size // 2:] = (20 + shift, 180 + shift, 90 + shift)
    return rgb


def odd_format_images() -> dict[str, tuple[bytes, np.ndarray]]:
    """Inputs that are not 8-bit RGB (grayscale, with alpha, palette, CMYK, 16-bit), each with
    the RGB a person sees: PIL's, except 16-bit gray (PIL clips it, TF scales it to 8 bits)."""
    out = {}
    for shift, (name, make) in enumerate({
        "gray.png": lambda a: _encode(Image.fromarray(a).convert("L"), "PNG"),
        "gray.jpg": lambda a: _encode(Image.fromarray(a).convert("L"), "JPEG", quality=95),
        "gray_alpha.png": lambda a: _encode(Image.fromarray(a).convert("LA"), "PNG"),
        "rgba.png": lambda a: _encode(Image.fromarray(
            np.dstack([a, np.full(a.shape[:2], 128, np.uint8)]), "RGBA"), "PNG"),
        "palette.png": lambda a: _encode(Image.fromarray(a).convert("P"), "PNG"),
        "palette.gif": lambda a: _encode(Image.fromarray(a).convert("P"), "GIF"),
        "cmyk.jpg": lambda a: _encode(Image.fromarray(a).convert("CMYK"), "JPEG", quality=95),
        "gray16.png": lambda a: _encode(Image.fromarray(a[..., 0].astype(np.uint16) * 257), "PNG"),
    }.items()):
        source = _halves(3 * shift)
        data = make(source)
        expected = (np.repeat(source[..., :1], 3, axis=-1) if name == "gray16.png"
                    else np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
        out[name] = data, expected
    return out


# --- decoding and resize policies (plain TF, no Beam) ---------------------------------------

@pytest.mark.parametrize("name", sorted(odd_format_images()))
def test_odd_formats_decode_to_plausible_rgb(name):
    data, expected = odd_format_images()[name]
    pixels = preprocessing.decode_and_resize(tf.constant([data]), 40).numpy()  # 40 -> 40
    assert pixels.shape == (1, 40, 40, 3)
    # The middle of each half, loosely: JPEG, palette quantization and CMYK round trips.
    for x in (10, 30):
        np.testing.assert_allclose(pixels[0, 20, x], expected[20, x], atol=12, err_msg=name)


def test_alpha_is_dropped_not_composited():
    """Documented choice (preprocessing.py): the RGB under a transparent pixel is kept."""
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = (10, 200, 30)  # alpha 0: fully transparent
    pixels = preprocessing.decode_and_resize(
        tf.constant([_encode(Image.fromarray(rgba, "RGBA"), "PNG")]), 8).numpy()
    assert (pixels == (10, 200, 30)).all()


def _bands_image(height=32, width=64) -> bytes:
    rgb = np.zeros((height, width, 3), np.uint8)
    for i, colour in enumerate(BANDS):
        rgb[:, i * width // 4:(i + 1) * width // 4] = colour
    return _encode(Image.fromarray(rgb), "PNG")


@pytest.mark.parametrize("resize", ["stretch", "crop", "pad"])
def test_resize_policy_geometry_on_a_2_to_1_image(resize):
    out = preprocessing.decode_and_resize(tf.constant([_bands_image()]), 32, resize).numpy()[0]
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8

    def colour(row, col):
        return tuple(int(v) for v in out[row, col])

    if resize == "stretch":  # all four bands, squeezed to 8 px each
        assert [colour(16, c) for c in (4, 12, 20, 28)] == BANDS
    elif resize == "crop":  # the centered square: the two middle bands, 16 px each
        assert [colour(row, c) for row in (0, 16, 31) for c in (4, 27)] == [BANDS[1], BANDS[2]] * 3
    else:  # the whole image at 32 x 16, centered: black bars above and below
        assert [colour(16, c) for c in (4, 12, 20, 28)] == BANDS
        assert out[:7].max() == 0 and out[25:].max() == 0
        assert out[9:23].min() > 0


def test_pad_on_a_portrait_image_bars_left_and_right():
    tall = np.full((64, 32, 3), 200, np.uint8)
    out = preprocessing.decode_and_resize(
        tf.constant([_encode(Image.fromarray(tall), "PNG")]), 32, "pad").numpy()[0]
    assert out[:, :7].max() == 0 and out[:, 25:].max() == 0 and (out[:, 9:23] == 200).all()


def test_unknown_resize_policy_is_refused():
    with pytest.raises(ValueError, match="resize policy"):
        preprocessing.decode_and_resize(tf.constant([_bands_image()]), 8, "squash")


# --- each base's convention vs keras.applications' own preprocess_input ----------------------

def _keras_preprocess_input(constructor: str):
    """keras.applications' preprocess_input for a base, or None when Keras has no such base."""
    builder = getattr(keras.applications, constructor, None)
    return None if builder is None else importlib.import_module(builder.__module__).preprocess_input


KERAS_BASES = [name for name, b in BACKBONES.items() if _keras_preprocess_input(b.constructor)]


def _eager_transform(monkeypatch, image_bytes: list[bytes], base: str, size: int) -> dict:
    """preprocessing_fn outside Beam: with mean_source imagenet the class-name vocabulary is its
    only analyzer, so it is stubbed and everything else runs as written."""
    monkeypatch.setattr(preprocessing.tft, "vocabulary", lambda *args, **kwargs: None)
    n = len(image_bytes)
    inputs = {features.IMAGE_KEY: tf.constant(image_bytes, shape=[n, 1]),
              features.LABEL_KEY: tf.zeros([n, 1], tf.int64),
              features.LABEL_NAME_KEY: tf.constant(["a"] * n, shape=[n, 1])}
    settings = TransformSettings(base_name=base, storage_size=size)
    return preprocessing.preprocessing_fn(inputs, {"settings": settings.to_dict()})


def _sample_photos(count: int) -> list[bytes]:
    photos = sorted(SHARED_FLOWERS.glob("*/*.jpg"))[:: 97][:count] if SHARED_FLOWERS.is_dir() else []
    rng = np.random.default_rng(3)
    synthetic = [_encode(Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)),
                         "PNG")]
    return [p.read_bytes() for p in photos] + synthetic


@pytest.mark.parametrize("base", KERAS_BASES)
def test_imagenet_convention_equals_keras_preprocess_input(monkeypatch, base):
    assert {"vgg16", "resnet50", "mobilenet_v2", "efficientnet_b0"} <= set(KERAS_BASES)
    backbone = BACKBONES[base]
    transformed = _eager_transform(monkeypatch, _sample_photos(3), base, 96)
    x = inputs.model_input(transformed, 96, inputs.is_bgr(backbone)).numpy()
    pixels = np.stack([tf.io.parse_tensor(s, tf.uint8).numpy()
                       for s in transformed[features.PIXELS_KEY].numpy()])
    expected = _keras_preprocess_input(backbone.constructor)(pixels.astype(np.float32))
    np.testing.assert_allclose(x, expected, atol=1e-3)


# --- parity: real Transform executor, training input path vs serving path -------------------

def _example(image: bytes, label: int, name: str) -> bytes:
    return tf.train.Example(features=tf.train.Features(feature={
        features.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
        features.LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        features.LABEL_NAME_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[name.encode()])),
    })).SerializeToString()


@pytest.fixture(scope="module")
def raw_examples(tmp_path_factory):
    """20 real photos (4 per class; 1 per class in eval) and the odd formats (train), as ingest
    writes them: gzipped tf.Examples under Split-<name>/, plus a schema."""
    if not SHARED_FLOWERS.is_dir():
        pytest.skip(f"no shared flowers at {SHARED_FLOWERS}")
    root = tmp_path_factory.mktemp("raw")
    splits: dict[str, list[bytes]] = {"train": [], "eval": []}
    images = []
    classes = sorted(p.name for p in SHARED_FLOWERS.iterdir() if p.is_dir())
    for label, name in enumerate(classes):
        for i, path in enumerate(sorted((SHARED_FLOWERS / name).glob("*.jpg"))[:PHOTOS_PER_CLASS]):
            images.append(path.read_bytes())
            splits["eval" if i == 0 else "train"].append(_example(images[-1], label, name))
    for data, _ in odd_format_images().values():
        images.append(data)
        splits["train"].append(_example(data, 0, classes[0]))
    for split, records in splits.items():
        (root / "examples" / f"Split-{split}").mkdir(parents=True)
        path = root / "examples" / f"Split-{split}" / "data_tfrecord-00000-of-00001.gz"
        with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
            for record in records:
                writer.write(record)
    return root, images, write_raw_schema(str(root / "schema"))


def _settings(base: str) -> dict:
    config = PipelineConfig()
    config.base.name = base
    config.tuner.input_sizes = [SIZE]
    config.trainer.batch_size = 8
    return config.model_settings()


def _training_path(run, tf_output, settings) -> np.ndarray:
    """Exactly what Tuner and Trainer iterate: make_dataset over the transformed examples."""
    examples = run.artifacts[specs.TRANSFORMED_EXAMPLES_KEY][0]
    accessor = DataAccessor(
        tf_dataset_factory=tfxio_utils.get_tf_dataset_factory_from_artifact([examples], []),
        record_batch_factory=None, data_view_decode_fn=None)
    dataset = inputs.make_dataset([run.split_pattern("train"), run.split_pattern("eval")],
                                     accessor, tf_output, settings, shuffle=False)
    return np.concatenate([x.numpy() for x, _ in dataset])


def _serving_path(tf_output, images: list[bytes], bgr: bool) -> np.ndarray:
    """What ExportModule serves: raw bytes -> the TFT layer -> model_input, in a tf.function."""
    layer = tf_output.transform_features_layer()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(image_bytes):
        return inputs.model_input(layer({features.IMAGE_KEY: tf.reshape(image_bytes, [-1, 1])}),
                                     SIZE, bgr)

    return serve(tf.constant(images)).numpy()


@pytest.mark.parametrize("mean_source,base,resize", [
    ("imagenet", "vgg16", "stretch"),       # caffe: BGR, ImageNet mean
    ("dataset", "mobilenet_v2", "crop"),    # TFT full pass, with std scaling
])
def test_serving_and_training_see_the_same_tensor(raw_examples, tmp_path, mean_source, base,
                                                  resize):
    root, images, schema = raw_examples
    transform = TransformConfig(mean_source=mean_source, std_scaling=mean_source == "dataset",
                                resize=resize)
    custom_config = {"settings": TransformSettings(transform=transform, base_name=base,
                                                   storage_size=SIZE).to_dict()}
    run = run_transform(str(root / "examples"), ["train", "eval"], schema, str(tmp_path),
                        custom_config)
    tf_output = tft.TFTransformOutput(run.transform_graph_uri)
    bgr = inputs.is_bgr(BACKBONES[base])
    trained = _training_path(run, tf_output, _settings(base))
    served = _serving_path(tf_output, images, bgr)
    assert trained.shape == served.shape == (len(images), SIZE, SIZE, 3)
    # Match each training tensor to its served twin (Beam does not promise an order).
    flat_s = served.reshape(len(images), -1)
    distance = np.stack([np.abs(flat_s - t.reshape(1, -1)).max(axis=-1) for t in trained])
    twin = distance.argmin(axis=1)
    assert sorted(twin) == list(range(len(images)))
    assert distance[np.arange(len(images)), twin].max() <= 1e-4

    stats = preprocessing.channel_stats(run.transform_graph_uri)
    if mean_source == "imagenet":
        conv_mean, conv_std, _ = CONVENTIONS[BACKBONES[base].preprocessing]
        assert stats == {"mean": list(conv_mean), "std": list(conv_std)}
    else:  # the train split's pixel mean and std, as stored (the eval photos do not count)
        train = [tf.io.parse_tensor(s, tf.uint8).numpy().astype(np.float64)
                 for s in _stored_pixels(run.split_pattern("train"))]
        pixels = np.stack(train).reshape(-1, 3)
        np.testing.assert_allclose(stats["mean"], pixels.mean(axis=0), atol=0.01)
        np.testing.assert_allclose(stats["std"], pixels.std(axis=0), atol=0.01)


def _stored_pixels(pattern: str) -> list[bytes]:
    out = []
    for path in tf.io.gfile.glob(pattern):
        for record in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            example = tf.train.Example.FromString(record.numpy())
            out.append(example.features.feature[features.PIXELS_KEY].bytes_list.value[0])
    return out
