from pathlib import Path

import pytest
from tlpipe.components.config import ConfigError, PipelineConfig
from tlpipe.components.config_loading import check_data_tree, load_config, validate


def test_defaults_round_trip_through_json():
    config = PipelineConfig()
    assert PipelineConfig.from_json(config.to_json()) == config
    assert config.storage_size == max(config.tuner.input_sizes)


def test_file_then_overrides_then_explicit(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("model_name: cats\ntrainer:\n  phase1_epochs: 3\n  augment: false\n")
    config = load_config(str(path), ["trainer.phase1_epochs=5", "tuner.input_sizes=[96, 128]",
                                     "trainer.phase2_learning_rate=3e-5"], work_dir="/w")
    assert config.model_name == "cats"
    assert config.trainer.phase1_epochs == 5
    assert config.trainer.augment is False
    assert config.tuner.input_sizes == [96, 128]
    assert config.trainer.phase2_learning_rate == pytest.approx(3e-5)
    assert config.work_dir == "/w"
    assert config.serving_model_dir == "/w/serving/cats"


@pytest.mark.parametrize("overrides, message", [
    (["trainer.epochs=3"], "unknown setting 'trainer.epochs'"),
    (["trainer.phase1_epochs=abc"], "'trainer.phase1_epochs' must be a valid integer, got 'abc'"),
    (["trainer.augment=maybe"], "'trainer.augment' must be a valid boolean"),
    (["nosuch=1"], "unknown setting 'nosuch'"),
    (["trainer"], "--set expects KEY=VALUE"),
])
def test_bad_overrides_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


# Issue 19: each accepted before, then failing later (or silently wrong).
BAD_SETTINGS = [
    (["trainer.phase1_learning_rate=0"], "'trainer.phase1_learning_rate' must be greater than 0"),
    (["trainer.phase1_learning_rate=.nan"], "'trainer.phase1_learning_rate' must be a finite number"),
    (["trainer.phase1_learning_rate=-1e-3"], "'trainer.phase1_learning_rate' must be greater than 0"),
    (["trainer.phase2_learning_rate=nan"], "'trainer.phase2_learning_rate' must be a finite number"),
    (["tuner.learning_rate_max=inf"], "'tuner.learning_rate_max' must be a finite number"),
    (["tuner.max_seconds=.nan"], "'tuner.max_seconds' must be a finite number"),
    (["tuner.max_seconds=0"], "'tuner.max_seconds' must be greater than 0"),
    (["trainer.batch_size=0"], "'trainer.batch_size' must be greater than or equal to 1"),
    (["trainer.dropout=2.0"], "'trainer.dropout' must be less than 1"),
    (["trainer.phase2_epochs=-3"], "'trainer.phase2_epochs' must be greater than or equal to 0"),
    (["tuner.input_sizes=[100000]"], "'tuner.input_sizes.0' must be less than or equal to 1024"),
    (["tuner.input_sizes=[]"], "'tuner.input_sizes' must have at least 1 item"),
    (["trainer.augment=5"], "'trainer.augment' must be a valid boolean, got 5"),
    (["trainer.batch_size=true"], "'trainer.batch_size' must be a valid integer, got True"),
    (["data.min_images_per_class=2"], "'data.min_images_per_class' must be greater than or equal to 3"),
    (["model_name=../../outside"], "'model_name' must be a plain name"),
    (["model_name=/abs/path"], "'model_name' must be a plain name"),
    (["model_name=.."], "'model_name' must be a plain name, not '.' or '..'"),
    (["trainer.optimizer=rmsprop"], "'trainer.optimizer' must be 'adam' or 'sgd'"),
    (["trainer=3"], "'trainer' must be a mapping of settings, got 3"),
]


@pytest.mark.parametrize("overrides, message", BAD_SETTINGS)
def test_bad_single_values_fail_on_loading(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


BAD_COMBINATIONS = [
    (["base.name=alexnet"], "unknown base 'alexnet'"),
    (["trainer.head=dense128", "tuner.input_sizes=[64,96]"],
     "tuner.input_sizes [64, 96] below the minimum 128 of base 'efficientnet_lite0' with head 'dense128'"),
    (["base.cut_at=block5a_projekt_conv"], "base.cut_at: 'block5a_projekt_conv' is not a layer of base"),
    (["base.cut_at=block2a_expand_conv"], "lies below the fine-tune boundary 'block6a_expand_conv'"),
    (["trainer.fine_tune_from=block9"], "trainer.fine_tune_from: 'block9' is not a layer"),
    (["trainer.fine_tune_from=1.5"], "fraction 1.5 must be in [0, 1)"),
    (["tuner.learning_rate_min=0.1"], "tuner.learning_rate_min 0.1 is above tuner.learning_rate_max"),
    (["data.train_ratio=0.9", "data.test_ratio=0.1"], "data.test_ratio must leave eval at least 0.01"),
]


@pytest.mark.parametrize("overrides, message", BAD_COMBINATIONS + [
    (["base.name=alexnet"], "unknown base 'alexnet'"),
    (["tuner.input_sizes=[16]"], "below the minimum"),
    (["data.train_ratio=1.5"], "'data.train_ratio' must be less than 1"),
    (["base.weights=/nope.h5"], "no such weights file"),
    (["transform.mean_source=median"], "mean_source"),
])
def test_validation_rejects_bad_values(overrides, message):
    with pytest.raises(ConfigError) as err:
        validate(load_config(None, overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_good_edges_pass():
    config = load_config(None, ["trainer.phase2_epochs=0", "trainer.dropout=0", "tuner.input_sizes=160,1024",
                                "trainer.phase1_learning_rate=1e-3", "base.cut_at=block6a_expand_conv",
                                "trainer.fine_tune_from=0.5", "model_name=cats-v2.1", "tuner.max_seconds=none"])
    validate(config)
    assert config.trainer.phase1_learning_rate == 1e-3 and config.tuner.input_sizes == [160, 1024]
    assert config.trainer.fine_tune_from == "0.5" and config.tuner.max_seconds is None


@pytest.mark.parametrize("content, message", [
    (b"- trainer\n- tuner\n", "must be a mapping of settings, got a list"),
    (b"42\n", "must be a mapping of settings, got a int"),
    (bytes(range(256)) * 4, "is not text"),
    (b"trainer: [1, 2\n", "is not valid YAML"),
])
def test_a_config_file_that_is_not_a_mapping_is_one_line(tmp_path: Path, content, message):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_validation_checks_the_data_tree(tmp_path: Path, tiny_images: Path):
    config = load_config(None, [])
    check_data_tree(config, str(tiny_images))
    with pytest.raises(ConfigError, match="data directory not found"):
        check_data_tree(config, str(tmp_path / "missing"))
    one = tmp_path / "one"
    (one / "cats").mkdir(parents=True)
    (one / "cats" / "a.jpg").write_bytes((tiny_images / "class_a" / "000.jpg").read_bytes())
    with pytest.raises(ConfigError, match="needs at least 2"):
        check_data_tree(config, str(one))


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/no/such.yaml")


def test_module_code_rebuilds_typed_sections_from_custom_config():
    """What crosses TFX's boundary as JSON comes back as the same typed sections."""
    import json

    from tlpipe.components.config import ModelSettings, TransformSettings
    from tlpipe.pipeline.pipeline import model_custom_config

    config = load_config(None, ["trainer.rotation=0.2", "tuner.input_sizes=[96,128]",
                                "tuner.retune_every=3"])
    custom = json.loads(json.dumps(model_custom_config(config)))
    settings = ModelSettings.from_dict(custom["settings"])
    assert settings.trainer == config.trainer and settings.base == config.base
    assert "retune_every" not in custom["settings"]["tuner"]  # when to tune: not a cache key
    assert settings.tuner.storage_size == 128
    transform = TransformSettings.from_dict(json.loads(json.dumps(config.transform_settings().to_dict())))
    assert transform.transform == config.transform and transform.storage_size == 128


MODULE_CODE = ("trainer", "tuner", "transform", "evaluator", "pusher")


def test_module_code_reads_no_setting_with_a_second_default():
    """`.get("<setting>", ...)` in component code would be a second default that can disagree."""
    import re

    from conftest import REPO

    names = set()
    for section in PipelineConfig.model_fields.values():
        annotation = section.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            names.update(annotation.model_fields)
    names.discard("name")  # too common a key (metric configs)
    alternatives = "|".join(sorted(names))
    pattern = re.compile(rf"""\.get\(\s*["']({alternatives})["']""")
    offenders = [f"{path.relative_to(REPO)}:{n}: {line.strip()}"
                 for room in MODULE_CODE for path in sorted((REPO / "components" / room).rglob("*.py"))
                 for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders
