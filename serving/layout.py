"""The serving directory's format, defined once: `<base>/<model_name>/<version>/`.

TF Serving loads the highest integer version and ignores non-numeric names, so a push is
written under a dot-prefixed temporary name and renamed into place (a half-copied version is
never visible: tensorflow/serving#1086). The pusher writes through this module; the server,
`compare` and retention read through it.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import tensorflow as tf
from tfx.dsl.io import fileio
from tlpipe.components import storage

METADATA_FILE = "metadata.json"
SAVED_MODEL_FILE = "saved_model.pb"  # written last on object stores: TF Serving waits for it
# Version labels of a model (`{"stable": 3, "canary": 4}`), beside its versions; retention never
# deletes a labelled version.
LABELS_FILE = "labels.json"


@dataclass(frozen=True)
class Version:
    number: int
    path: str
    metadata: dict[str, Any]


def versions(model_dir: str) -> list[Version]:
    """Complete versions, oldest first."""
    if not fileio.exists(model_dir):
        return []
    found = []
    for name in fileio.listdir(model_dir):
        name = name.rstrip("/")
        if not is_version_name(name):
            continue
        path = os.path.join(model_dir, name)
        try:
            metadata = read_metadata(path)
        except (FileNotFoundError, tf.errors.NotFoundError):
            continue  # retired between listing and reading: not a version any more
        found.append(Version(int(name), path, metadata))
    return sorted(found, key=lambda v: v.number)


MAX_VERSION = 2 ** 63 - 1  # ModelSpec.version is an int64


def is_version_name(name: str) -> bool:
    """ASCII digits only (`str.isdigit` also takes '٥' and '²'), within int64."""
    return name.isascii() and name.isdigit() and int(name) <= MAX_VERSION


def read_metadata(version_path: str) -> dict[str, Any]:
    meta = os.path.join(version_path, METADATA_FILE)
    if not fileio.exists(meta):
        return {}
    with fileio.open(meta, "r") as fh:
        return json.loads(fh.read())


def find_pushed(model_dir: str, source_model_uri: str) -> Version | None:
    """The version already holding this trained model, so a re-run never pushes a duplicate."""
    for version in versions(model_dir):
        if version.metadata.get("source_model_uri") == source_model_uri:
            return version
    return None


def _copy_tree(src: str, dst: str) -> None:
    for root, _, files in fileio.walk(src):
        rel = os.path.relpath(root, src)
        target = os.path.join(dst, rel) if rel != "." else dst
        fileio.makedirs(target)
        for name in files:
            fileio.copy(os.path.join(root, name), os.path.join(target, name), overwrite=True)


def push(saved_model_dir: str, model_dir: str, metadata: dict[str, Any],
         extra_files: dict[str, bytes] | None = None) -> Version:
    """Copies a SavedModel in as the next integer version: staged, then published (renamed locally;
    on object stores copied with saved_model.pb last, see storage.publish_tree).

    `extra_files` (relative path -> bytes, e.g. warmup requests) are written before the rename,
    so they are there when the version first becomes visible.
    """
    fileio.makedirs(model_dir)
    existing = versions(model_dir)
    number = (existing[-1].number + 1) if existing else 1
    staging = os.path.join(model_dir, f".tmp-{number}-{uuid.uuid4().hex[:8]}")
    _copy_tree(saved_model_dir, staging)
    for relative, payload in (extra_files or {}).items():
        fileio.makedirs(os.path.dirname(os.path.join(staging, relative)))
        with fileio.open(os.path.join(staging, relative), "wb") as fh:
            fh.write(payload)
    record = {**metadata, "version": number, "pushed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with fileio.open(os.path.join(staging, METADATA_FILE), "w") as fh:
        fh.write(json.dumps(record, indent=2, sort_keys=True))
    final = os.path.join(model_dir, str(number))
    # Local: rename. Object stores: file by file, saved_model.pb last (see storage.publish_tree).
    storage.publish_tree(staging, final, last=SAVED_MODEL_FILE)
    return Version(number, final, record)


def read_labels(model_dir: str) -> dict[str, int]:
    path = os.path.join(model_dir, LABELS_FILE)
    if not fileio.exists(path):
        return {}
    with fileio.open(path, "r") as fh:
        return {label: int(version) for label, version in json.loads(fh.read()).items()}


def write_labels(model_dir: str, labels: dict[str, int]) -> None:
    """Replaces the labels file atomically (write aside, then rename over)."""
    staging = os.path.join(model_dir, f".{LABELS_FILE}.{uuid.uuid4().hex[:8]}")
    with fileio.open(staging, "w") as fh:
        fh.write(json.dumps(labels, indent=2, sort_keys=True))
    fileio.rename(staging, os.path.join(model_dir, LABELS_FILE), overwrite=True)


def retire_old_versions(model_dir: str, keep: int) -> list[int]:
    """Deletes all but the newest `keep` versions, sparing labelled ones; returns the deleted."""
    if keep <= 0:
        return []
    protected = set(read_labels(model_dir).values())
    doomed = [v for v in versions(model_dir)[:-keep] if v.number not in protected]
    for version in doomed:
        # Rename out of the numeric namespace first, so a poller never sees a half-deleted version.
        trash = os.path.join(model_dir, f".retired-{version.number}-{uuid.uuid4().hex[:8]}")
        fileio.rename(version.path, trash)
        fileio.rmtree(trash)
    return [v.number for v in doomed]


# TF Serving's --model_config_file (a ModelServerConfig text proto), beside the model dirs:
# `tlpipe label` keeps its version_labels equal to labels.json, so both servers agree.
MODEL_SERVER_CONFIG_FILE = "models.config"


def model_server_config_path(model_dir: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(model_dir.rstrip("/"))),
                        MODEL_SERVER_CONFIG_FILE)


def set_label(model_dir: str, label: str, version: int) -> str:
    """Points `label` at `version` in labels.json and in the ModelServerConfig beside the model
    dirs (created when absent, other models and fields kept); returns the config's path.

    TF Serving accepts a label only on a loaded version, so the model's version policy must
    load it: `latest` (TF Serving's default) becomes `all` (retention bounds how many that is,
    and never deletes a labelled version); `specific` gets the version added.
    """
    from google.protobuf import text_format
    from tlpipe.serving import config as server_config

    if version not in {v.number for v in versions(model_dir)}:
        raise ValueError(f"no version {version} under {model_dir}")
    path = model_server_config_path(model_dir)
    if fileio.exists(path):
        with fileio.open(path, "r") as fh:
            proto = server_config.parse_model_server_config(fh.read())
    else:
        proto = server_config.parse_model_server_config("model_config_list {}")
    name = os.path.basename(os.path.abspath(model_dir.rstrip("/")))
    entry = next((c for c in proto.model_config_list.config if c.name == name), None)
    if entry is None:
        entry = proto.model_config_list.config.add(
            name=name, base_path=os.path.abspath(model_dir), model_platform="tensorflow")
    labels = {**dict(entry.version_labels), **read_labels(model_dir), label: version}
    entry.version_labels.clear()
    entry.version_labels.update(labels)
    policy = entry.model_version_policy
    if policy.WhichOneof("policy_choice") == "specific":
        wanted = sorted(set(policy.specific.versions) | set(labels.values()))
        policy.specific.ClearField("versions")
        policy.specific.versions.extend(wanted)
    elif policy.WhichOneof("policy_choice") != "all":
        policy.all.SetInParent()
    write_labels(model_dir, labels)
    staging = os.path.join(os.path.dirname(path), f".{MODEL_SERVER_CONFIG_FILE}.{uuid.uuid4().hex[:8]}")
    with fileio.open(staging, "w") as fh:
        fh.write(text_format.MessageToString(proto))
    fileio.rename(staging, path, overwrite=True)
    return path
