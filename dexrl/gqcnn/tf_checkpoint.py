"""Read TensorFlow 1.x checkpoints in the "V2" tensor-bundle format without TensorFlow or protobuf.

A checkpoint with prefix ``P`` is ``P.index`` plus data shards ``P.data-00000-of-0000N``.

- The index is a LevelDB-style sorted table (SSTable). Its last 48 bytes are the footer: two block handles
  (metaindex, index; each a varint64 offset and size) padded to 40 bytes, then the fixed64 magic
  0xdb4775248b80fb57. Every block is followed by a 5-byte trailer: compression type (0 = none) and the masked
  CRC32C of the block and type byte. A block is a run of entries (varint32 shared key length, varint32
  unshared length, varint32 value length, the unshared key bytes, the value) followed by uint32 restart
  offsets and their count. The index block maps keys to the handles of the data blocks, which hold the
  records.
- Record "" is a ``BundleHeaderProto`` (1: num_shards, 2: endianness, 3: version); every other key is a tensor
  name mapping to a ``BundleEntryProto`` (1: dtype, 2: shape, 3: shard_id, 4: offset, 5: size, 6: crc32c
  (fixed32, masked), 7: slices). Shapes are ``TensorShapeProto`` (2: repeated dim {1: size, 2: name}).
- A tensor's bytes are ``size`` bytes at ``offset`` in its shard, little-endian, row-major.

Protobuf messages are decoded here from the wire format (varint / 64-bit / length-delimited / 32-bit fields).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = [
    "BundleIndex",
    "CheckpointError",
    "CorruptCheckpoint",
    "MissingVariable",
    "ShapeMismatch",
    "TFCheckpoint",
    "TensorEntry",
    "TruncatedCheckpoint",
    "UnknownCheckpointFormat",
    "crc32c",
    "data_shard_name",
    "read_index",
]


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not hold what was expected."""


class UnknownCheckpointFormat(CheckpointError):
    """The files are not a TF V2 checkpoint of a known GQ-CNN (wrong magic, V1 checkpoint, other network)."""


class TruncatedCheckpoint(CheckpointError):
    """A file ends before the data it promises (an interrupted download or copy)."""


class CorruptCheckpoint(CheckpointError):
    """A checksum or size does not match: the file was damaged."""


class MissingVariable(CheckpointError):
    """A variable the network needs is not in the checkpoint."""


class ShapeMismatch(CheckpointError):
    """A variable has a different shape than the network needs."""


_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_TRAILER_SIZE = 5
_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),
    2: np.dtype("<f8"),
    3: np.dtype("<i4"),
    4: np.dtype("u1"),
    5: np.dtype("<i2"),
    6: np.dtype("i1"),
    9: np.dtype("<i8"),
    10: np.dtype("?"),
    19: np.dtype("<f2"),
}
"""TensorFlow DataType enum -> numpy dtype, for the fixed-size types a GQ-CNN checkpoint may hold."""


def data_shard_name(prefix: str, shard: int, num_shards: int) -> str:
    """File name of a data shard, e.g. ``model.ckpt.data-00000-of-00001``."""
    return f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"


# --- CRC32C (Castagnoli), as LevelDB and TensorFlow use it -----------------------------------------------


def _crc_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0x82F63B78), table >> 1).astype(np.uint32)
    return table


_CRC_TABLE = _crc_table()
_CRC_CHUNK = 1024


@lru_cache(maxsize=1)
def _zero_chunk_operator() -> tuple[int, ...]:
    """Images of the 32 unit register states after ``_CRC_CHUNK`` zero bytes (the update is GF(2)-linear)."""
    registers = np.uint32(1) << np.arange(32, dtype=np.uint32)
    for _ in range(_CRC_CHUNK):
        registers = _CRC_TABLE[registers & 0xFF] ^ (registers >> 8)
    return tuple(int(r) for r in registers)


def crc32c(data: bytes) -> int:
    """CRC32C of ``data``. Whole 1 KiB chunks run side by side in numpy from a zero register; their results
    are chained with the zero-byte operator: register after a chunk = Z(register before) xor its own CRC."""
    chunks = len(data) // _CRC_CHUNK
    register = 0xFFFFFFFF
    if chunks:
        block = np.frombuffer(data, np.uint8, chunks * _CRC_CHUNK).reshape(chunks, _CRC_CHUNK)
        partial = np.zeros(chunks, np.uint32)
        for column in block.T:
            partial = _CRC_TABLE[(partial ^ column) & 0xFF] ^ (partial >> 8)
        operator = _zero_chunk_operator()
        for own in partial.tolist():
            shifted = 0
            for bit, image in enumerate(operator):
                if register >> bit & 1:
                    shifted ^= image
            register = shifted ^ own
    table = _CRC_TABLE.tolist()
    for byte in data[chunks * _CRC_CHUNK :]:
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
    """LevelDB's masking of stored CRCs (a rotation by 15 bits plus a constant)."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# --- wire formats -------------------------------------------------------------------------------------------


def _varint(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise TruncatedCheckpoint(f"{what}: a varint runs past the end of the data")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise CorruptCheckpoint(f"{what}: a varint is longer than 10 bytes")


def _proto_fields(buf: bytes, what: str) -> dict[int, list[int | bytes]]:
    """Decode a protobuf message into field number -> values (ints for numeric, bytes for
    length-delimited)."""
    fields: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos, what)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _varint(buf, pos, what)
        elif wire_type in (1, 5):
            width = 8 if wire_type == 1 else 4
            if pos + width > len(buf):
                raise TruncatedCheckpoint(f"{what}: a fixed-width field runs past the end")
            value = int.from_bytes(buf[pos : pos + width], "little")
            pos += width
        elif wire_type == 2:
            length, pos = _varint(buf, pos, what)
            if pos + length > len(buf):
                raise TruncatedCheckpoint(f"{what}: a length-delimited field runs past the end")
            value = buf[pos : pos + length]
            pos += length
        else:
            raise CorruptCheckpoint(f"{what}: unsupported protobuf wire type {wire_type}")
        fields.setdefault(number, []).append(value)
    return fields


def _block_handle(buf: bytes, pos: int, what: str) -> tuple[tuple[int, int], int]:
    offset, pos = _varint(buf, pos, what)
    size, pos = _varint(buf, pos, what)
    return (offset, size), pos


def _read_block(index: bytes, handle: tuple[int, int], source: str) -> bytes:
    offset, size = handle
    end = offset + size + _TRAILER_SIZE
    if end > len(index) - _FOOTER_SIZE:
        raise TruncatedCheckpoint(f"{source}: a table block ends at byte {end}, past the end of the index")
    contents, compression = index[offset : offset + size], index[offset + size]
    (stored_crc,) = struct.unpack_from("<I", index, offset + size + 1)
    if _masked(crc32c(index[offset : offset + size + 1])) != stored_crc:
        raise CorruptCheckpoint(f"{source}: checksum mismatch in the index block at byte {offset}")
    if compression != 0:
        raise UnknownCheckpointFormat(
            f"{source}: compressed index blocks (type {compression}) are not supported"
        )
    return contents


def _block_records(block: bytes, source: str) -> Iterator[tuple[bytes, bytes]]:
    """Key/value records of a table block, undoing the prefix compression of keys."""
    if len(block) < 4:
        raise CorruptCheckpoint(f"{source}: a table block is shorter than its restart count")
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * restarts
    if end < 0:
        raise CorruptCheckpoint(
            f"{source}: a table block claims {restarts} restart points, more than it holds"
        )
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos, source)
        unshared, pos = _varint(block, pos, source)
        value_length, pos = _varint(block, pos, source)
        if shared > len(key) or pos + unshared + value_length > end:
            raise CorruptCheckpoint(f"{source}: a table record overruns its block")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + value_length]
        pos += value_length


# --- the bundle --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lies in the data shards.

    Attributes:
        name: variable name, e.g. ``im_stream/conv1_1/conv1_1_weights``.
        dtype: TensorFlow DataType enum value (1 = float32).
        shape: the tensor's shape, TensorFlow layout (conv kernels are HWIO).
        shard, offset, size: data shard index, byte offset and byte count.
        crc32c: masked CRC32C of the bytes, or None when the writer stored none.
    """

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int | None


def _tensor_entry(name: str, value: bytes, source: str) -> TensorEntry:
    fields = _proto_fields(value, f"{source}: entry {name!r}")
    if 7 in fields:
        raise UnknownCheckpointFormat(
            f"{source}: {name!r} is a partitioned variable (slices are not supported)"
        )
    dims = []
    for shape in fields.get(2, []):
        for dim in _proto_fields(shape, f"{source}: shape of {name!r}").get(2, []):
            dims.append(int(_proto_fields(dim, f"{source}: shape of {name!r}").get(1, [0])[0]))

    def scalar(number: int, default: int | None = 0) -> int | None:
        return fields[number][-1] if number in fields else default

    return TensorEntry(name, scalar(1), tuple(dims), scalar(3), scalar(4), scalar(5), scalar(6, None))


@dataclass(frozen=True)
class BundleIndex:
    """The parsed ``.index`` file: how many data shards there are and where each tensor lies."""

    num_shards: int
    entries: dict[str, TensorEntry]


def read_index(index: bytes, source: str = "checkpoint index") -> BundleIndex:
    """Parse the bytes of a ``model.ckpt.index``.

    Raises:
        UnknownCheckpointFormat, TruncatedCheckpoint, CorruptCheckpoint: with the reason in the message.
    """
    if len(index) < _FOOTER_SIZE:
        raise TruncatedCheckpoint(f"{source}: the index has {len(index)} bytes, less than a table footer")
    footer = index[-_FOOTER_SIZE:]
    if int.from_bytes(footer[-8:], "little") != _TABLE_MAGIC:
        raise UnknownCheckpointFormat(
            f"{source}: not a TensorFlow V2 checkpoint index (no table magic number at the end: a truncated "
            "file, or a V1 checkpoint or SavedModel, which are not supported)"
        )
    _, pos = _block_handle(footer, 0, source)  # the metaindex block holds nothing a bundle needs
    index_handle, _ = _block_handle(footer, pos, source)
    records: dict[str, bytes] = {}
    for _, data_handle in _block_records(_read_block(index, index_handle, source), source):
        handle, _ = _block_handle(data_handle, 0, source)
        for key, value in _block_records(_read_block(index, handle, source), source):
            records[key.decode("utf-8")] = value
    if "" not in records:
        raise UnknownCheckpointFormat(f"{source}: the index has no bundle header record")
    header = _proto_fields(records.pop(""), f"{source}: bundle header")
    if header.get(2, [0])[-1] != 0:
        raise UnknownCheckpointFormat(f"{source}: big-endian checkpoints are not supported")
    entries = {name: _tensor_entry(name, value, source) for name, value in sorted(records.items())}
    return BundleIndex(int(header.get(1, [1])[-1]), entries)


class TFCheckpoint:
    """The tensors of a TF V2 checkpoint, read from its parsed index and the bytes of its data shards.

    Args:
        index: the parsed ``model.ckpt.index`` (:func:`read_index`).
        shards: contents of the data shards in order (``...data-00000-of-0000N`` first).
        source: name used in error messages (e.g. the zip and member name).
    """

    def __init__(self, index: BundleIndex, shards: Sequence[bytes], source: str = "checkpoint") -> None:
        if index.num_shards != len(shards):
            raise CheckpointError(
                f"{source}: the index names {index.num_shards} data shards, {len(shards)} were given"
            )
        self.source, self.entries, self._shards = source, index.entries, list(shards)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def read(self, name: str) -> np.ndarray:
        """The tensor ``name`` as a numpy array (TensorFlow layout); checks size and checksum."""
        if name not in self.entries:
            raise MissingVariable(f"{self.source}: no variable {name!r}")
        entry = self.entries[name]
        if entry.dtype not in _DTYPES:
            raise UnknownCheckpointFormat(
                f"{self.source}: {name!r} has unsupported TensorFlow dtype {entry.dtype}"
            )
        dtype = _DTYPES[entry.dtype]
        if entry.size != math.prod(entry.shape) * dtype.itemsize:
            raise CorruptCheckpoint(f"{self.source}: {name!r} has {entry.size} bytes for shape {entry.shape}")
        if not 0 <= entry.shard < len(self._shards):
            raise CorruptCheckpoint(
                f"{self.source}: {name!r} lies in data shard {entry.shard}, which does not exist"
            )
        shard = self._shards[entry.shard]
        if entry.offset + entry.size > len(shard):
            raise TruncatedCheckpoint(
                f"{self.source}: {name!r} ends at byte {entry.offset + entry.size} of data shard "
                f"{entry.shard}, which has only {len(shard)} bytes (truncated download?)"
            )
        raw = shard[entry.offset : entry.offset + entry.size]
        if entry.crc32c is not None and _masked(crc32c(raw)) != entry.crc32c:
            raise CorruptCheckpoint(f"{self.source}: checksum mismatch in the data of {name!r}")
        return np.frombuffer(raw, dtype).reshape(entry.shape).astype(dtype.newbyteorder("="))
