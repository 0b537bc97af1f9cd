"""The building blocks of the typed configuration (components/config.py): the strict, closed
Section base, the value types shared by its settings, and pydantic's errors as one line."""
from __future__ import annotations

from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from tlpipe.components.errors import UsageError

MAX_INPUT_SIZE = 1024  # Transform stores every image at the largest size: bound the bytes


class ConfigError(UsageError):
    """A configuration problem, reported as one line before anything runs."""


def _number_from_text(value: Any) -> Any:
    """YAML 1.1 reads `1e-3` (no dot) as text: take it as the number it spells."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _none_from_text(value: Any) -> Any:
    return None if isinstance(value, str) and value.strip().lower() in ("none", "null", "") else value


def _text_from_number(value: Any) -> Any:
    """`--set model_name=2024` or `trainer.fine_tune_from=0.7` arrive as numbers from YAML."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _list_from_text(value: Any) -> Any:
    """`--set tuner.input_sizes=160,192` (YAML reads it as one string)."""
    if isinstance(value, str):
        return [yaml.safe_load(v) for v in (s.strip() for s in value.strip("[]").split(",")) if v]
    return value


def _plain_name(value: str) -> str:
    if value in (".", ".."):
        raise ValueError("must be a plain name, not '.' or '..'")
    return value


Float = Annotated[float, BeforeValidator(_number_from_text), Field(allow_inf_nan=False)]
PositiveFloat = Annotated[Float, Field(gt=0)]
Share = Annotated[Float, Field(ge=0, le=1)]
Strength = Annotated[Float, Field(ge=0, lt=1)]
Text = Annotated[str, BeforeValidator(_text_from_number)]
OptionalText = Annotated[Text | None, BeforeValidator(_none_from_text)]
PlainName = Annotated[Text, Field(pattern=r"^[A-Za-z0-9._-]+$"), AfterValidator(_plain_name)]
InputSize = Annotated[int, Field(ge=1, le=MAX_INPUT_SIZE)]


class Section(BaseModel):
    """Strict, closed (unknown keys are errors), documented by attribute docstrings."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True,
                              use_attribute_docstrings=True)

    @classmethod
    def from_dict(cls, raw: Any):
        """The typed section from plain data (YAML, JSON, TFX's custom_config); one-line errors."""
        try:
            return cls.model_validate(raw)
        except ValidationError as err:
            raise ConfigError(_one_line(err.errors()[0], cls)) from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def replace(self, **changes: Any):
        """A validated copy with `changes` (pydantic's model_copy would not validate them)."""
        return self.from_dict({**self.to_dict(), **changes})


def _one_line(error: dict[str, Any], root: type[BaseModel]) -> str:
    """pydantic's first error as tlpipe's one line: the dotted setting, what it must be, the value."""
    path = [str(p) for p in error["loc"]]
    name = ".".join(path) or "config"
    value = error.get("input")
    if error["type"] == "extra_forbidden":
        section: Any = root
        for part in path[:-1]:
            section = section.model_fields[part].annotation
            # `MySQLConfig | None`: the section inside the optional
            section = next((t for t in getattr(section, "__args__", ()) if isinstance(t, type)
                            and issubclass(t, BaseModel)), section)
        valid = ", ".join(sorted(section.model_fields))
        return f"unknown setting '{name}' (valid: {valid})"
    if error["type"] in ("model_type", "model_attributes_type", "dict_type"):
        return f"'{name}' must be a mapping of settings, got {value!r}"
    message = (error["msg"].replace("Input should", "must").replace("Value should", "must")
               .replace(" after validation", "").replace("Value error, ", ""))
    if message.startswith("String should match pattern"):
        message = "must be a plain name of letters, digits, '.', '_' or '-'"
    return f"'{name}' {message}, got {value!r}"
