"""The torch-free legacy .pth reader: strided tensors, refused formats, and hostile files (a weights
path is user input: no record of the file may run code or allocate more than the file holds)."""
from __future__ import annotations

import io
import os
import pickle
import sys
import types
import zipfile

import numpy as np
import pytest
from tlpipe.components.trainer.legacy_pth import LegacyPthError, read_legacy_state_dict

RECORDS = ("magic number", "protocol version", "system info", "state dict", "storage keys")


def _legacy_records(obj, storages, monkeypatch, numels=None):
    """The five pickles torch.save(..., _use_new_zipfile_serialization=False) writes, pickled with
    a stand-in torch. `storages`: {key: float32 array}; tensors in `obj` are ("T", key, offset,
    size, stride). `numels` overrides the element count a storage claims."""
    numels = {**{k: a.size for k, a in storages.items()}, **(numels or {})}
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called")

    FloatStorage.__module__, _rebuild_tensor_v2.__module__ = "torch", "torch._utils"
    FloatStorage.__qualname__ = "FloatStorage"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    torch.FloatStorage, torch._utils = FloatStorage, utils
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2

    class StorageRef:
        def __init__(self, key):
            self.key = key

    class TensorRef:
        def __init__(self, key, offset, size, stride):
            self.args = (StorageRef(key), offset, size, stride, False, {})

        def __reduce__(self):
            return _rebuild_tensor_v2, self.args

    class Pickler(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, StorageRef):
                return ("storage", FloatStorage, o.key, "cpu", numels[o.key], None)
            return None

    def convert(o):
        if isinstance(o, tuple) and o and o[0] == "T":
            return TensorRef(*o[1:])
        if isinstance(o, dict):
            return {k: convert(v) for k, v in o.items()}
        return o

    with monkeypatch.context() as m:
        m.setitem(sys.modules, "torch", torch)
        m.setitem(sys.modules, "torch._utils", utils)
        state_dict = io.BytesIO()
        Pickler(state_dict, protocol=2).dump(convert(obj))
    return [pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2), pickle.dumps(1001, protocol=2),
            pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2),
            state_dict.getvalue(), pickle.dumps(list(storages), protocol=2)]


def _storage_bytes(storages, numels=None):
    numels = numels or {}
    return b"".join(np.int64(numels.get(k, a.size)).astype("<i8").tobytes() + a.astype("<f4").tobytes()
                    for k, a in storages.items())


def _write_legacy(path, obj, storages, monkeypatch, numels=None):
    path.write_bytes(b"".join(_legacy_records(obj, storages, monkeypatch, numels))
                     + _storage_bytes(storages, numels))


SMALL = ({"w": ("T", "0", 0, (2, 3), (3, 1))}, {"0": np.arange(6, dtype=np.float32)})


def test_reader_honours_strides_and_offsets(tmp_path, monkeypatch):
    data = np.arange(20, dtype=np.float32)
    path = tmp_path / "strided.pth"
    _write_legacy(path, {
        "plain": ("T", "0", 0, (2, 3), (3, 1)),
        "transposed": ("T", "0", 0, (3, 2), (1, 3)),  # a .t() view: non-contiguous
        "offset": ("T", "0", 6, (2, 2), (4, 1)),
        "scalar": ("T", "0", 19, (), ()),
    }, {"0": data}, monkeypatch)
    sd = read_legacy_state_dict(path)
    assert list(sd) == ["plain", "transposed", "offset", "scalar"]
    np.testing.assert_array_equal(sd["plain"], data[:6].reshape(2, 3))
    np.testing.assert_array_equal(sd["transposed"], data[:6].reshape(2, 3).T)
    np.testing.assert_array_equal(sd["offset"], [[6, 7], [10, 11]])
    assert sd["scalar"].shape == () and sd["scalar"] == 19
    assert sd["transposed"].flags.c_contiguous


def test_reader_rejects_zip_other_objects_and_corrupt_files(tmp_path, monkeypatch):
    zipped = tmp_path / "new_format.pth"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("archive/data.pkl", b"")
    with pytest.raises(LegacyPthError, match="zip-format"):
        read_legacy_state_dict(zipped)

    not_dict = tmp_path / "list.pth"
    _write_legacy(not_dict, [("T", "0", 0, (2,), (1,))], {"0": np.zeros(2, np.float32)}, monkeypatch)
    with pytest.raises(LegacyPthError, match="state dict"):
        read_legacy_state_dict(not_dict)

    good = tmp_path / "good.pth"
    _write_legacy(good, *SMALL, monkeypatch)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:-5])
    with pytest.raises(LegacyPthError, match="truncated"):
        read_legacy_state_dict(truncated)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a pickle at all" * 10)
    with pytest.raises(LegacyPthError, match="garbage.pth"):
        read_legacy_state_dict(garbage)


class _RunsCommand:
    """Unpickles to os.system(command): what a hostile weights file would carry."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _hostile_records(index, payload, monkeypatch):
    """A valid small file whose record `index` is `payload` in place of the real record."""
    records = _legacy_records(*SMALL, monkeypatch)
    records[index] = payload
    return b"".join(records) + _storage_bytes(SMALL[1])


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])  # GLOBAL and STACK_GLOBAL opcodes
@pytest.mark.parametrize("index", range(len(RECORDS)))
def test_no_record_runs_code(tmp_path, monkeypatch, index, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / f"evil{index}.pth"
    path.write_bytes(_hostile_records(index, pickle.dumps(_RunsCommand(f"touch {marker}"), protocol=protocol),
                                      monkeypatch))
    with pytest.raises(LegacyPthError) as info:
        read_legacy_state_dict(path)
    assert not marker.exists(), f"the {RECORDS[index]} record ran a command"
    message = str(info.value)
    assert str(path) in message and f"{os.system.__module__}.system" in message, message
    assert RECORDS[index] in message, message


def test_globals_nested_in_plausible_records_are_refused(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    evil = _RunsCommand(f"touch {marker}")
    nested = {
        2: pickle.dumps({"protocol_version": 1001, "little_endian": True, "type_sizes": evil}, protocol=2),
        4: pickle.dumps(["0", evil], protocol=2),
    }
    for index, payload in nested.items():
        path = tmp_path / f"nested{index}.pth"
        path.write_bytes(_hostile_records(index, payload, monkeypatch))
        with pytest.raises(LegacyPthError, match=f"{os.system.__module__}.system"):
            read_legacy_state_dict(path)
    # Inside the state dict: as a tensor's size, next to the names a state dict may use.
    path = tmp_path / "nested3.pth"
    path.write_bytes(b"".join(_legacy_records({"w": ("T", "0", 0, evil, (1,))}, SMALL[1], monkeypatch))
                     + _storage_bytes(SMALL[1]))
    with pytest.raises(LegacyPthError, match=f"{os.system.__module__}.system"):
        read_legacy_state_dict(path)
    assert not marker.exists()


def test_names_allowed_in_the_state_dict_are_refused_in_the_header(tmp_path, monkeypatch):
    import collections

    path = tmp_path / "header_global.pth"
    path.write_bytes(_hostile_records(2, pickle.dumps(collections.OrderedDict(little_endian=True), protocol=2),
                                      monkeypatch))
    with pytest.raises(LegacyPthError, match="collections.OrderedDict from its system info record"):
        read_legacy_state_dict(path)


def test_sizes_a_file_claims_are_bounded_by_the_file(tmp_path, monkeypatch):
    data = {"0": np.arange(2, dtype=np.float32)}
    broadcast = tmp_path / "broadcast.pth"  # one float viewed as 10^12 of them: 4 TB if copied
    _write_legacy(broadcast, {"w": ("T", "0", 0, (10**6, 10**6), (0, 0))}, data, monkeypatch)
    with pytest.raises(LegacyPthError, match="does not fit its storage"):
        read_legacy_state_dict(broadcast)

    huge = tmp_path / "huge_storage.pth"  # claims 2^40 floats, holds 2: refused before any read
    _write_legacy(huge, {"w": ("T", "0", 0, (2,), (1,))}, data, monkeypatch, numels={"0": 2**40})
    with pytest.raises(LegacyPthError, match="truncated"):
        read_legacy_state_dict(huge)
