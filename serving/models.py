"""Model versions under a base path: discovery, loading, polling, in-flight reference counts.

TF Serving's layout and default version policy ("latest 1"): ``BASE/<version>/saved_model.pb``
with ``<version>`` a positive integer folder; the highest version is served. A poll thread
looks for a newer (or, when the served one was deleted, the next lower) version every
``poll_seconds``; the new version is loaded beside the old one, warmed up with its
``assets.extra/tf_serving_warmup_requests`` (serving/warmup.py) and swapped in, and the old one
is released only when the last request holding it has finished.

    models = ModelVersions("mixem", "models/mixem", poll_seconds=1.0)
    models.start()                       # loads the highest version, starts polling
    with models.acquire() as version:    # or acquire(3) for a specific version
        outputs = version.run("serving_default", {"images": batch})
    models.stop()
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

log = logging.getLogger("serving")

# ModelVersionStatus.State names, as tensorflow_serving.apis.get_model_status_pb2 spells them.
AVAILABLE, UNLOADING, END = "AVAILABLE", "UNLOADING", "END"


class VersionNotFound(LookupError):
    """The requested model or version is not being served."""


def find_versions(base_path: str | Path) -> list[int]:
    """Positive integer sub-folders of `base_path` holding a ``saved_model.pb`` (or ``.pbtxt``),
    ascending."""
    base = Path(base_path)
    if not base.is_dir():
        return []
    versions = []
    for child in base.iterdir():
        if child.name.isdigit() and int(child.name) > 0 and _graph_file(child) is not None:
            versions.append(int(child.name))
    return sorted(versions)


def read_signature_defs(saved_model_dir: str | Path) -> dict:
    """The SignatureDef protos of a SavedModel's (first) MetaGraph, by signature name."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    path = _graph_file(Path(saved_model_dir))
    if path is None:
        raise FileNotFoundError(f"no saved_model.pb or saved_model.pbtxt in {saved_model_dir}")
    if path.suffix == ".pbtxt":
        text_format.Parse(path.read_text(), proto)
    else:
        proto.ParseFromString(path.read_bytes())
    return dict(proto.meta_graphs[0].signature_def)


def _graph_file(folder: Path) -> Path | None:
    for name in ("saved_model.pb", "saved_model.pbtxt"):
        if (folder / name).is_file():
            return folder / name
    return None


class LoadedVersion:
    """One loaded SavedModel version: its signatures, their SignatureDefs, a reference count.

    `run` executes a signature on numpy inputs and returns numpy outputs; `calls` counts the
    graph executions (so tests can see batching merge requests). After `retire`, the loaded
    graph is dropped as soon as no request holds the version any more.
    """

    def __init__(self, name: str, version: int, path: str | Path):
        import tensorflow as tf

        self.name, self.version, self.path = name, version, Path(path)
        self._loaded = tf.saved_model.load(str(self.path))
        self._functions = dict(self._loaded.signatures)
        all_defs = read_signature_defs(self.path)
        self.signature_defs = {key: all_defs[key] for key in self._functions if key in all_defs}
        self.calls = 0
        self.state = AVAILABLE
        self._holders = 0
        self._lock = threading.Lock()
        self.released = threading.Event()

    def run(self, signature: str, inputs: dict) -> dict:
        """Runs `signature` on {input name: numpy array}; returns {output name: numpy array}."""
        import tensorflow as tf

        function = self._functions[signature]
        with self._lock:
            self.calls += 1
        outputs = function(**{key: tf.constant(value) for key, value in inputs.items()})
        return {key: value.numpy() for key, value in outputs.items()}

    def hold(self) -> None:
        with self._lock:
            if self.state == END:
                raise VersionNotFound(f"version {self.version} of model {self.name!r} was unloaded")
            self._holders += 1

    def release(self) -> None:
        with self._lock:
            self._holders -= 1
            self._unload_if_idle()

    def retire(self) -> None:
        """Stops new requests from holding this version; unloads it once the last one ends."""
        with self._lock:
            if self.state == AVAILABLE:
                self.state = UNLOADING
            self._unload_if_idle()

    def _unload_if_idle(self) -> None:
        if self.state == UNLOADING and self._holders == 0:
            self.state = END
            self._loaded = self._functions = None
            self.released.set()
            log.info("model %s: version %d unloaded", self.name, self.version)


class Hold:
    """A held version: the context manager releases it on exit."""

    def __init__(self, loaded: LoadedVersion):
        self.loaded = loaded

    def __enter__(self) -> LoadedVersion:
        return self.loaded

    def __exit__(self, *exc_info) -> None:
        self.loaded.release()


class ModelVersions:
    """The served versions of one model under `base_path`, kept current by a poll thread."""

    def __init__(self, name: str, base_path: str | Path, poll_seconds: float = 1.0):
        if poll_seconds < 0:
            raise ValueError(f"poll_seconds must be >= 0, got {poll_seconds}")
        self.name, self.base_path, self.poll_seconds = name, Path(base_path), poll_seconds
        self._current: LoadedVersion | None = None
        self._history: dict[int, LoadedVersion] = {}  # every version loaded, for GetModelStatus
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed: dict[int, str] = {}

    def start(self) -> None:
        """Loads the highest version now (if any) and, with poll_seconds > 0, starts polling."""
        if not self.base_path.is_dir():
            raise FileNotFoundError(f"model base path {self.base_path} is not a directory")
        self.poll()
        if self._current is None:
            log.warning("model %s: no versions under %s yet; waiting for one", self.name,
                        self.base_path)
        if self.poll_seconds > 0:
            self._thread = threading.Thread(target=self._poll_loop, name="version-poll",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:  # a bad export must not stop the polling
                log.exception("model %s: polling %s failed", self.name, self.base_path)

    def poll(self) -> None:
        """Serves the highest loadable version on disk, if it is not the one served now."""
        versions = find_versions(self.base_path)
        current = self._current
        for version in reversed(versions):
            if current is not None and version == current.version:
                return
            loaded = self._load(version)
            if loaded is not None:
                self._swap(loaded)
                return

    def _load(self, version: int) -> LoadedVersion | None:
        """Loads and warms up `version` (serving/warmup.py); None, logged, if either fails."""
        from serving.warmup import replay_warmup

        try:
            loaded = LoadedVersion(self.name, version, self.base_path / str(version))
            warmed = replay_warmup(loaded)
        except Exception as error:  # e.g. an export still being written; retried next poll
            message = f"{type(error).__name__}: {error}"
            if self._failed.get(version) != message:
                log.error("model %s: cannot load version %d: %s", self.name, version, message)
            self._failed[version] = message
            return None
        self._failed.pop(version, None)
        if warmed:
            log.info("model %s: version %d warmed up with %d requests", self.name, version,
                     warmed)
        return loaded

    def _swap(self, loaded: LoadedVersion) -> None:
        with self._lock:
            old, self._current = self._current, loaded
            self._history[loaded.version] = loaded
        if old is None:
            log.info("model %s: serving version %d from %s", self.name, loaded.version, loaded.path)
        else:
            log.info("model %s: now serving version %d (was %d; it unloads after its in-flight "
                     "requests)", self.name, loaded.version, old.version)
            old.retire()

    @property
    def current(self) -> LoadedVersion | None:
        return self._current

    def acquire(self, version: int | None = None) -> "Hold":
        """Holds the served version (or `version`, which must be the served one) at once;
        raises VersionNotFound. Use as ``with models.acquire() as loaded:``."""
        with self._lock:
            loaded = self._current
            if loaded is None or (version is not None and version != loaded.version):
                wanted = "latest" if version is None else f"version {version}"
                served = "none" if loaded is None else str(loaded.version)
                raise VersionNotFound(f"servable not found: model {self.name!r}, {wanted} "
                                      f"(served version: {served})")
            loaded.hold()
        return Hold(loaded)

    def statuses(self) -> list[tuple[int, str]]:
        """(version, state name) of every version loaded so far, newest first."""
        with self._lock:
            return [(v, self._history[v].state) for v in sorted(self._history, reverse=True)]
