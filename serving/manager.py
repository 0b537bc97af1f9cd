"""The manager: which loaded version answers a request, and the version lifecycle.

Follows TF Serving's AspiredVersionsManager with its availability-preserving policy: a newly
aspired version is loaded and warmed up before it takes traffic, and an old version is unloaded
only once an aspired one is available (or its directory is gone), after its in-flight requests
finish. A version that fails to load is recorded with its error for GetModelStatus and the
version before it keeps serving. Requests read an immutable snapshot, so they never wait for a
load.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
from tlpipe.serving import source
from tlpipe.serving.config import ModelConfig, VersionPolicy
from tlpipe.serving.servable import LoadedModel
from tlpipe.serving.status import from_exception, invalid_argument, not_found

log = logging.getLogger(__name__)

# tensorflow.serving.ModelVersionStatus.State
START, LOADING, AVAILABLE, UNLOADING, END = 10, 20, 30, 40, 50
STATE_NAMES = {START: "START", LOADING: "LOADING", AVAILABLE: "AVAILABLE",
               UNLOADING: "UNLOADING", END: "END"}
UNLOAD_DRAIN_SECONDS = 30.0


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: int
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""


Loader = Callable[[str, int, str], LoadedModel]


class ModelManager:
    def __init__(self, models: list[ModelConfig], load: Loader):
        self._load = load
        self._models: dict[str, ModelConfig] = {m.name: m for m in models}
        self._serving: dict[str, dict[int, LoadedModel]] = {}  # replaced whole, never mutated
        self._status: dict[str, dict[int, VersionStatus]] = {}
        self._failed: dict[str, dict[int, tuple]] = {}  # model -> version -> dir fingerprint
        self._labels: dict[str, dict[str, int]] = {}  # model -> label -> version
        self._reconcile_lock = threading.Lock()
        self._status_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # ---- the lifecycle -------------------------------------------------------------------
    def reconcile(self) -> None:
        """One poll: load what the source aspires to, then retire what it no longer does."""
        with self._reconcile_lock:
            for model in list(self._models.values()):
                if self._stop.is_set():
                    return
                self._reconcile_model(model)
            for name in list(self._serving):
                if name not in self._models:
                    for version in sorted(self._serving[name]):
                        self._unload(name, version)
                    self._publish(name, None)

    def _reconcile_model(self, model: ModelConfig) -> None:
        self._labels[model.name] = source.version_labels(model)
        aspired = source.aspired_versions(model)
        if aspired is None:
            return  # listing failed: keep serving what is loaded, try again next poll
        failed = self._failed.setdefault(model.name, {})
        for version in sorted(aspired):
            if version in self._serving.get(model.name, {}):
                continue
            if failed.get(version) == source.fingerprint(aspired[version]):
                continue  # failed, and its directory has not changed since: not retried
            self._load_version(model.name, version, aspired[version])
        loaded = self._serving.get(model.name, {})
        aspired_available = any(v in loaded for v in aspired)
        for version in sorted(loaded):
            if version in aspired:
                continue
            if aspired_available or not _still_on_disk(model, version):
                self._unload(model.name, version)

    def _load_version(self, name: str, version: int, path: str) -> None:
        self._set_status(name, VersionStatus(version, LOADING))
        started = time.monotonic()
        seen = source.fingerprint(path)  # before loading: a write during the load retries
        try:
            loaded = self._load(name, version, path)
        except Exception as err:  # a bad version never takes the server down
            error = from_exception(err)
            log.error("model %s version %d failed to load: %s", name, version, error.message)
            self._failed[name][version] = seen
            code = error.code if error.code != grpc.StatusCode.INTERNAL else grpc.StatusCode.UNKNOWN
            self._set_status(name, VersionStatus(version, END, code, error.message))
            return
        serving = dict(self._serving.get(name, {}))
        serving[version] = loaded
        self._publish(name, serving)
        self._set_status(name, VersionStatus(version, AVAILABLE))
        log.info("model %s version %d available (%.1fs)", name, version,
                 time.monotonic() - started)

    def _unload(self, name: str, version: int) -> None:
        serving = dict(self._serving.get(name, {}))
        loaded = serving.pop(version, None)
        if loaded is None:
            return
        self._set_status(name, VersionStatus(version, UNLOADING))
        self._publish(name, serving)  # no new request reaches it from here on
        if not loaded.wait_idle(UNLOAD_DRAIN_SECONDS):
            log.warning("model %s version %d: requests still running after %.0fs; unloading",
                        name, version, UNLOAD_DRAIN_SECONDS)
        loaded.close()
        self._set_status(name, VersionStatus(version, END))
        log.info("model %s version %d unloaded", name, version)

    def _publish(self, name: str, versions: dict[int, LoadedModel] | None) -> None:
        serving = dict(self._serving)
        if versions is None:
            serving.pop(name, None)
        else:
            serving[name] = versions
        self._serving = serving

    def _set_status(self, name: str, status: VersionStatus) -> None:
        with self._status_lock:
            self._status.setdefault(name, {})[status.version] = status

    # ---- polling and configuration -------------------------------------------------------
    def start_polling(self, interval_seconds: float) -> None:
        """Polls the file system every interval; 0 means only the initial load (as TF Serving)."""
        if interval_seconds <= 0:
            return

        def poll():
            while not self._stop.wait(interval_seconds):
                try:
                    self.reconcile()
                except Exception:
                    log.exception("file-system poll failed; retrying next interval")

        self._poller = threading.Thread(target=poll, name="fs-poll", daemon=True)
        self._poller.start()

    def reload_config(self, models: list[ModelConfig]) -> None:
        """Replaces the model list and applies it before returning (HandleReloadConfigRequest)."""
        with self._reconcile_lock:
            self._models = {m.name: m for m in models}
            self._labels = {name: labels for name, labels in self._labels.items()
                            if name in self._models}
            for name in list(self._failed):
                self._failed[name].clear()
            with self._status_lock:  # a failure is re-evaluated, never kept from an old config
                self._status = {name: {v: s for v, s in versions.items() if not s.error_message}
                                for name, versions in self._status.items() if name in self._models}
        self.reconcile()

    def models(self) -> list[ModelConfig]:
        return list(self._models.values())

    def labels(self, name: str) -> dict[str, int]:
        return dict(self._labels.get(name, {}))

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=60)
        with self._reconcile_lock:
            for name in list(self._serving):
                for version in sorted(self._serving[name]):
                    self._unload(name, version)

    # ---- serving requests ----------------------------------------------------------------
    def resolve_version(self, name: str, version: int | None = None,
                        label: str | None = None) -> LoadedModel:
        versions = self._serving.get(name)
        if name not in self._models and not versions:
            raise not_found(f"Servable not found for request: Latest({name})")
        if label:
            version = self._label_version(name, label)
        versions = versions or {}
        if version is not None:
            if version not in versions:
                raise not_found(f"Servable not found for request: Specific({name}, {version})")
            return versions[version]
        if not versions:
            raise not_found(f"Servable not found for request: Latest({name})")
        return versions[max(versions)]

    def _label_version(self, name: str, label: str) -> int:
        labels = self._labels.get(name, {}) if name in self._models else {}
        if label not in labels:
            raise invalid_argument(f"Unrecognized servable version label: {label}")
        return labels[label]

    @contextlib.contextmanager
    def serving(self, model_spec) -> Iterator[LoadedModel]:
        """The version a request's ModelSpec names, held until the request is done."""
        model = self.resolve_version(*spec_choice(model_spec))
        model.acquire()
        try:
            yield model
        finally:
            model.release()

    def version_status(self, name: str, version: int | None = None,
                       label: str | None = None) -> list[VersionStatus]:
        with self._status_lock:
            statuses = dict(self._status.get(name, {}))
        if name not in self._models and not statuses:
            raise not_found(f"Could not find any versions of model {name}")
        if label:
            version = self._label_version(name, label)
        if version is not None:
            if version not in statuses:
                raise not_found(f"Could not find version {version} of model {name}")
            return [statuses[version]]
        if not statuses:
            raise not_found(f"Could not find any versions of model {name}")
        return [statuses[v] for v in sorted(statuses, reverse=True)]

    def load_failures(self) -> list[str]:
        """'model m version v: error' for each version whose last load failed."""
        with self._status_lock:
            return [f"model {name} version {status.version} failed to load: {status.error_message}"
                    for name, versions in self._status.items() for status in versions.values()
                    if status.state == END and status.error_message]

    def loaded(self) -> dict[str, list[int]]:
        return {name: sorted(versions) for name, versions in self._serving.items()}


def _still_on_disk(model: ModelConfig, version: int) -> bool:
    """Whether the version's directory is still there (an unreadable listing counts as yes)."""
    listed = source.aspired_versions(ModelConfig(model.name, model.base_path,
                                                 VersionPolicy("all")))
    return listed is None or version in listed


def spec_choice(model_spec) -> tuple[str, int | None, str | None]:
    """(name, version, label) of a tensorflow.serving.ModelSpec; INVALID_ARGUMENT without a name."""
    if not model_spec.name:
        raise invalid_argument("Missing ModelSpec name")
    choice = model_spec.WhichOneof("version_choice")
    return (model_spec.name, model_spec.version.value if choice == "version" else None,
            model_spec.version_label if choice == "version_label" else None)
