"""The gqcnn_bridge wire protocol: framing, message schemas, validation and typed errors (see PROTOCOL.md).

Every message is one binary websocket frame::

    [uint32 LE header length H][H bytes of UTF-8 JSON header][zero padding to a multiple of 8][data section]

The header's ``arrays`` list names each raw little-endian array in the data section (dtype, shape, offset from
the start of the data section, a multiple of 8, and byte count). Nothing received is unpickled or evaluated:
headers are parsed as JSON and arrays are read as typed views of the message bytes.

This module is shared by the server (which raises :class:`ProtocolViolation` for malformed requests) and the
clients (which turn error replies into :mod:`dexrl.grasp` planner errors with :func:`planner_error_for`).
"""

from __future__ import annotations

import functools
import json
import math
import struct
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import torch

from dexrl.grasp import (
    CameraIntrinsics,
    ImageGrasps,
    NoValidGrasps,
    PlannerError,
    PlannerInputError,
    PlannerUnavailable,
    PlanResult,
)


_READ_ONLY_WARNING = "The given NumPy array is not writable"
# torch.from_numpy warns (once per process) when it shares a read-only buffer such as a received message's.
# A filter for that message alone, set once: a catch_warnings() around each call cost about 24 us per request
# and swapped the process's filters from the bridge's threads, which is not thread-safe.
warnings.filterwarnings("ignore", message=_READ_ONLY_WARNING, category=UserWarning)

__all__ = [
    "PROTOCOL_VERSION",
    "ErrorCode",
    "Limits",
    "Message",
    "PlanOptions",
    "PlanRequest",
    "ProtocolViolation",
    "ServerInfo",
    "SharedMemoryLimits",
    "arrays_nbytes",
    "as_fragments",
    "check_depth_values",
    "decode_message",
    "decode_plan_reply",
    "decode_plan_request",
    "downsample_q_map",
    "downsampled_grid",
    "encode_error",
    "encode_message",
    "encode_plan_reply",
    "encode_plan_request",
    "grasp_orientations_cam",
    "message_fragments",
    "plan_request_fragments",
    "planner_error_for",
    "q_map_reply_nbytes",
]

PROTOCOL_VERSION = 1
"""The protocol version this module speaks; every message carries it and the server refuses others."""

ALIGNMENT = 8
"""The data section and every array in it start at a multiple of this many bytes."""

MAX_HEADER_BYTES = 1 << 20
"""Longest JSON header accepted [bytes] (a 256-image request with per-image intrinsics needs ~30 KB)."""

WHOLE_MESSAGE_BYTES = 1 << 20
"""Messages up to this size are sent as one websocket frame, larger ones in fragments of FRAGMENT_BYTES."""

FRAGMENT_BYTES = 1 << 20
"""Fragment size of large messages. websockets masks and frames every fragment into new objects, and on
receipt copies and unmasks each into new ones again. With glibc's default allocator 1 MiB pieces are
mapped afresh and page-faulted in (a 64-image request: 86 ms of overhead with 1 MiB fragments, 36 ms with
64 KiB, on a 2-core VM); once :func:`dexrl.allocator.keep_freed_memory` has run (the server and both
clients call it) they are recycled, and fewer, larger fragments cost less Python per byte (61 ms with 64 KiB,
45 ms with 1 MiB). A message of one 0.8 MB image is cheapest as a single frame."""

MAX_ARRAY_DIMS = 8
MAX_REQUEST_ID_CHARS = 128
MAX_Q_MAP_STRIDE = 64

DTYPES: dict[str, np.dtype] = {
    "bool": np.dtype("?"),
    "uint8": np.dtype("u1"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
    "float16": np.dtype("<f2"),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
}
"""Wire dtype names and their little-endian layouts (``bool`` is one byte, 0 or 1)."""

_WIRE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
"""Wire dtype -> its name (a lookup instead of comparing against every entry of DTYPES)."""

_HEADER_LENGTH = struct.Struct("<I")

_HEADER_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)
"""Writes headers compactly; built once (``json.dumps`` with ``separators`` builds an encoder per call, a
quarter of the cost of a reply header). Headers are trees, so the check for reference cycles is skipped."""


class ErrorCode(StrEnum):
    """The ``code`` of an error reply."""

    BAD_FRAME = (
        "bad_frame"  # bytes disagree with the framing: truncated, out of bounds, misaligned, text frame
    )
    BAD_HEADER = "bad_header"  # header is not a UTF-8 JSON object, or a field is missing or ill-typed
    UNSUPPORTED_VERSION = "unsupported_version"
    BAD_DTYPE = "bad_dtype"
    BAD_SHAPE = "bad_shape"
    BAD_DEPTH = "bad_depth"  # NaN, inf, or an image without a positive depth
    BAD_INPUT = "bad_input"  # the planner rejected the input for a reason the bridge does not check itself
    NO_VALID_GRASPS = "no_valid_grasps"
    TOO_LARGE = "too_large"
    UNAUTHORIZED = "unauthorized"
    HANDSHAKE_REQUIRED = "handshake_required"
    SHM_UNAVAILABLE = "shm_unavailable"  # a shared-memory region cannot be registered (see gqcnn_bridge.shm)
    OVERLOADED = "overloaded"
    SHUTTING_DOWN = "shutting_down"
    INTERNAL = "internal"


RETRYABLE_CODES = frozenset({ErrorCode.OVERLOADED, ErrorCode.SHUTTING_DOWN})
"""Errors after which the same request may succeed if sent again (later, or to a restarted server)."""

_INPUT_CODES = frozenset(
    {
        ErrorCode.BAD_FRAME,
        ErrorCode.BAD_HEADER,
        ErrorCode.BAD_DTYPE,
        ErrorCode.BAD_SHAPE,
        ErrorCode.BAD_DEPTH,
        ErrorCode.BAD_INPUT,
        ErrorCode.TOO_LARGE,
    }
)


class ProtocolViolation(Exception):
    """A received message breaks the protocol; the server answers it with an error reply of this ``code``.

    Args:
        code: the error code of the reply.
        message: what was wrong, for a person.
        request_id: the offending request's id, when its header was readable.
    """

    def __init__(self, code: ErrorCode, message: str, request_id: int | str | None = None):
        super().__init__(message)
        self.code = code
        self.request_id = request_id


def planner_error_for(code: str, message: str) -> PlannerError:
    """The :mod:`dexrl.grasp` planner error a client raises for an error reply (``.code`` is the wire code).

    Input errors become :class:`PlannerInputError`, ``no_valid_grasps`` :class:`NoValidGrasps`, retryable
    errors :class:`PlannerUnavailable`, and the rest (unauthorized, version, internal) :class:`PlannerError`.
    """
    if code in _INPUT_CODES:
        error: PlannerError = PlannerInputError(message)
    elif code == ErrorCode.NO_VALID_GRASPS:
        error = NoValidGrasps(message)
    elif code in RETRYABLE_CODES:
        error = PlannerUnavailable(message)
    else:
        error = PlannerError(message)
    error.code = code
    return error


@dataclass(frozen=True)
class Limits:
    """What one server accepts; advertised to clients in the welcome message.

    Attributes:
        max_message_bytes: largest message either way [bytes] (also the websocket frame limit).
        max_batch_images: most images in one request, and in one micro-batch.
        max_image_side: largest image height or width [px].
        max_k: most grasps per image.
    """

    max_message_bytes: int = 64 << 20
    max_batch_images: int = 256
    max_image_side: int = 4096
    max_k: int = 256


@dataclass(frozen=True)
class SharedMemoryLimits:
    """The shared-memory regions one connection may register (advertised in the welcome message).

    Attributes:
        max_regions: regions registered at once per connection.
        max_region_bytes: largest region [bytes].
    """

    max_regions: int = 16
    max_region_bytes: int = 1 << 30


@dataclass(frozen=True)
class ServerInfo:
    """The server's side of the handshake (the ``welcome`` message).

    Attributes:
        model_id: name of the served model (e.g. its weights file and hash prefix).
        provenance: where the weights came from (source, converter, sha256, ...), as strings.
        device: where inference runs (``cpu``, ``cuda:0``).
        limits: what the server accepts.
        batch_window_s: how long the server waits to merge concurrent requests into one batch [s].
        shared_memory: what the server accepts of same-host shared memory; None when it offers none.
        lane: the path of the server's same-host lane (a Unix socket speaking the same messages, see
            PROTOCOL.md); offered with shared memory only, None otherwise.
        version: protocol version.
    """

    model_id: str
    provenance: dict[str, str]
    device: str
    limits: Limits = field(default_factory=Limits)
    batch_window_s: float = 0.0
    shared_memory: SharedMemoryLimits | None = None
    lane: str | None = None
    version: int = PROTOCOL_VERSION

    def to_header(self) -> dict[str, Any]:
        header = {
            "type": "welcome",
            "version": self.version,
            "model": {"id": self.model_id, "provenance": self.provenance},
            "device": self.device,
            "limits": asdict(self.limits),
            "batch_window_s": self.batch_window_s,
        }
        if self.shared_memory is not None:
            header["shared_memory"] = asdict(self.shared_memory)
            if self.lane is not None:
                header["shared_memory"]["lane"] = self.lane
        return header

    @classmethod
    def from_header(cls, header: Mapping[str, Any]) -> ServerInfo:
        try:
            return cls(
                model_id=str(header["model"]["id"]),
                provenance={str(k): str(v) for k, v in header["model"]["provenance"].items()},
                device=str(header["device"]),
                limits=Limits(**{name: int(header["limits"][name]) for name in Limits.__dataclass_fields__}),
                batch_window_s=float(header["batch_window_s"]),
                shared_memory=None
                if header.get("shared_memory") is None
                else SharedMemoryLimits(
                    **{
                        name: int(header["shared_memory"][name])
                        for name in SharedMemoryLimits.__dataclass_fields__
                    }
                ),
                lane=None if header.get("shared_memory") is None else _optional_str(header["shared_memory"].get("lane")),
                version=int(header["version"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ProtocolViolation(ErrorCode.BAD_HEADER, f"malformed welcome message: {error!r}") from error


def _optional_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


@dataclass
class Message:
    """A decoded message: its JSON header (without ``arrays``) and array views into its bytes, or into the
    shared-memory regions named in ``regions``."""

    header: dict[str, Any]
    arrays: dict[str, np.ndarray]
    regions: frozenset[str] = frozenset()

    @property
    def type(self) -> str:
        return self.header["type"]

    @property
    def request_id(self) -> int | str | None:
        return self.header.get("request_id")


def _aligned(offset: int) -> int:
    return -(-offset // ALIGNMENT) * ALIGNMENT


def _wire_dtype(dtype: np.dtype) -> str:
    name = _WIRE_NAMES.get(dtype)
    if name is None:
        raise TypeError(f"dtype {dtype} has no wire name (use one of {sorted(DTYPES)})")
    return name


def _wire_layout(array: np.ndarray) -> np.ndarray:
    """The array as a little-endian C-ordered array; itself when it already is one (the common case, and
    cheaper to check than to convert)."""
    if array.dtype in _WIRE_NAMES and array.flags.c_contiguous:
        return array
    return array.astype(array.dtype.newbyteorder("<"), order="C", copy=False)


@functools.lru_cache(maxsize=128)
def _placement(
    layout: tuple[tuple[str, str, tuple[int, ...], int], ...], region: str | None
) -> tuple[str, tuple[int, ...], int]:
    """Where arrays go when placed one after another from offset 0, each at a multiple of :data:`ALIGNMENT`.

    Args:
        layout: (name, wire dtype, shape, nbytes) of each array, in order.
        region: the shared-memory region they are placed in, named in their entries; None: the data section.

    Returns:
        The JSON text of their ``arrays`` header entries, their offsets, and where the last ends [bytes].
        Cached: a stream of requests or replies repeats a few layouts, and writing the entries is most of what
        encoding a small message costs.
    """
    entries, offsets, end = [], [], 0
    for name, dtype, shape, nbytes in layout:
        offset = _aligned(end)
        entry = {"name": name, "dtype": dtype, "shape": list(shape), "offset": offset, "nbytes": nbytes}
        entries.append(entry if region is None else {**entry, "region": region})
        offsets.append(offset)
        end = offset + nbytes
    return _HEADER_ENCODER.encode(entries), tuple(offsets), end


def _placed(
    arrays: Mapping[str, np.ndarray] | None, region: str | None = None
) -> tuple[str, list[tuple[int, np.ndarray]], int]:
    """:func:`_placement` of arrays, with each array (little-endian, C-ordered) next to its offset."""
    wire = [_wire_layout(array) for array in (arrays or {}).values()]
    layout = tuple(
        (name, _wire_dtype(array.dtype), array.shape, array.nbytes) for name, array in zip(arrays or {}, wire)
    )
    entries, offsets, end = _placement(layout, region)
    return entries, list(zip(offsets, wire)), end


def arrays_nbytes(arrays: Mapping[str, np.ndarray]) -> int:
    """Bytes the arrays take placed one after another (the size of a shared-memory region they fit in)."""
    return _placed(arrays)[2]


def _layout(
    header: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray] | None,
    region: tuple[str, memoryview] | None = None,
) -> tuple[bytes, list[tuple[int, np.ndarray]], int]:
    """The framing of a message: its prefix (header length, header and padding), each array with its offset
    in the message (arrays little-endian, C order), and the message length. With ``region`` the arrays are
    copied into that shared-memory region instead (see :func:`encode_message`), and the message is the prefix
    alone."""
    entries, placed, end = _placed(arrays, None if region is None else region[0])
    if region is not None:
        name, memory = region
        if end > len(memory):
            raise ValueError(f"{end} bytes of arrays do not fit in the {len(memory)}-byte region {name!r}")
        for offset, array in placed:
            memory[offset : offset + array.nbytes] = _bytes_of(array)
        placed, end = [], 0
    # the header as JSON with the cached entries spliced in as its last field
    text = _HEADER_ENCODER.encode({"version": PROTOCOL_VERSION, **header})
    header_bytes = f'{text[:-1]},"arrays":{entries}}}'.encode()
    data_start = _aligned(_HEADER_LENGTH.size + len(header_bytes))
    prefix = _HEADER_LENGTH.pack(len(header_bytes)) + header_bytes
    prefix += bytes(data_start - len(prefix))
    return prefix, [(data_start + offset, array) for offset, array in placed], data_start + end


def _bytes_of(array: np.ndarray) -> memoryview:
    """The bytes of a C-contiguous array, without copying (half the cost of a reshaped uint8 view)."""
    return array.data.cast("B") if array.size else memoryview(b"")  # cast refuses shapes with a zero


def _joined(prefix: bytes, placed: list[tuple[int, np.ndarray]], length: int) -> bytearray:
    message = bytearray(length)
    message[: len(prefix)] = prefix
    for start, array in placed:
        message[start : start + array.nbytes] = _bytes_of(array)
    return message


def encode_message(
    header: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray] | None = None,
    region: tuple[str, memoryview] | None = None,
) -> bytearray:
    """Frame a header and arrays into one contiguous message (arrays are written little-endian, C order).

    Args:
        header: JSON-serializable fields; must include ``type`` (``version`` is added when absent) and not
            ``arrays`` (written from ``arrays``).
        arrays: name -> array, written in this order.
        region: a registered shared-memory region's name and memory: the arrays are copied into it, one after
            another from its start, and the message is the header alone, whose entries name the region.

    Raises:
        ValueError: the arrays do not fit in ``region``.
    """
    return _joined(*_layout(header, arrays, region))


def message_fragments(
    header: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None
) -> list[bytes | bytearray | memoryview]:
    """The message :func:`encode_message` frames, as the pieces to send as one websocket message: a message
    of up to :data:`WHOLE_MESSAGE_BYTES` joined into one piece; a larger one in fragments of at most
    :data:`FRAGMENT_BYTES`, without copying the arrays: runs of whole fragments are views of the arrays'
    memory (which must not change until sent), and only the prefix, padding and pieces shorter than a
    fragment are copied."""
    prefix, placed, length = _layout(header, arrays)
    if length <= WHOLE_MESSAGE_BYTES:
        return [_joined(prefix, placed, length)]
    fragments: list[bytes | bytearray | memoryview] = []
    pending, position = bytearray(prefix), len(prefix)  # the fragment being filled; bytes placed so far
    for start, array in placed:
        pending += bytes(start - position)  # alignment padding
        while len(pending) >= FRAGMENT_BYTES:  # a header longer than a fragment
            fragments.append(pending[:FRAGMENT_BYTES])
            del pending[:FRAGMENT_BYTES]
        view = _bytes_of(array)
        position = start + len(view)
        if pending:  # top the pending fragment up; it is full if anything of the array is left
            fill = min(len(view), FRAGMENT_BYTES - len(pending))
            pending += view[:fill]
            view = view[fill:]
            if len(pending) == FRAGMENT_BYTES:
                fragments.append(pending)
                pending = bytearray()
        whole = len(view) - len(view) % FRAGMENT_BYTES
        fragments += [view[i : i + FRAGMENT_BYTES] for i in range(0, whole, FRAGMENT_BYTES)]
        pending += view[whole:]
    fragments += [pending[i : i + FRAGMENT_BYTES] for i in range(0, len(pending), FRAGMENT_BYTES)]
    return fragments or [pending]


def as_fragments(message: bytearray) -> bytearray | list[memoryview]:
    """What to pass to a websocket ``send`` for an encoded message: up to :data:`WHOLE_MESSAGE_BYTES` whole,
    a larger one in fragments of :data:`FRAGMENT_BYTES` (views, no copies)."""
    if len(message) <= WHOLE_MESSAGE_BYTES:
        return message
    view = memoryview(message)
    return [view[start : start + FRAGMENT_BYTES] for start in range(0, len(message), FRAGMENT_BYTES)]


def _reject_constant(token: str) -> None:
    raise ValueError(f"{token} is not JSON")


_HEADER_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
"""Reads headers: strict JSON (no NaN or Infinity); built once, as ``json.loads`` would build it per call."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_header(data: bytes) -> tuple[dict[str, Any], int]:
    """The JSON header and where the data section starts."""
    if len(data) < _HEADER_LENGTH.size:
        raise ProtocolViolation(ErrorCode.BAD_FRAME, f"message of {len(data)} bytes has no header length")
    (length,) = _HEADER_LENGTH.unpack_from(data)
    if length > MAX_HEADER_BYTES:
        raise ProtocolViolation(
            ErrorCode.BAD_FRAME, f"header length {length} exceeds {MAX_HEADER_BYTES} bytes"
        )
    if _HEADER_LENGTH.size + length > len(data):
        raise ProtocolViolation(
            ErrorCode.BAD_FRAME, f"header length {length} runs past the {len(data)}-byte message"
        )
    try:
        text = bytes(data[_HEADER_LENGTH.size : _HEADER_LENGTH.size + length]).decode("utf-8")
        header = _HEADER_DECODER.decode(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ProtocolViolation(ErrorCode.BAD_HEADER, f"header is not UTF-8 JSON: {error}") from None
    if not isinstance(header, dict):
        raise ProtocolViolation(
            ErrorCode.BAD_HEADER, f"header must be a JSON object, got {type(header).__name__}"
        )
    return header, _aligned(_HEADER_LENGTH.size + length)


def _read_request_id(header: dict[str, Any]) -> int | str | None:
    request_id = header.get("request_id")
    valid = request_id is None or (_is_int(request_id) and 0 <= request_id < 2**53)
    valid = valid or (isinstance(request_id, str) and len(request_id) <= MAX_REQUEST_ID_CHARS)
    if not valid:
        raise ProtocolViolation(
            ErrorCode.BAD_HEADER,
            f"request_id must be an integer in [0, 2^53) or a string of <= {MAX_REQUEST_ID_CHARS} chars",
        )
    return request_id


def _array_source(
    spec: dict[str, Any],
    data: bytes,
    data_start: int,
    regions: Mapping[str, memoryview] | None,
    request_id,
) -> tuple[bytes | memoryview, int, str]:
    """Where an array's ``offset`` counts from: the message's data section, or the start of the registered
    shared-memory region its ``region`` names; as (buffer, start in it, what it is, for messages)."""
    if "region" not in spec:
        return data, data_start, "data section"
    name = spec["region"]
    if not isinstance(name, str) or regions is None or name not in regions:
        raise ProtocolViolation(
            ErrorCode.BAD_HEADER,
            f"array {spec['name']!r}: {name!r} is not a shared-memory region registered on this connection",
            request_id,
        )
    return regions[name], 0, f"region {name!r}"


def _wire_dtype_of(name: Any) -> np.dtype | None:
    """The dtype a header's ``dtype`` field names; None if it names none (or is no string)."""
    return DTYPES.get(name) if isinstance(name, str) else None


def _is_shape(shape: Any) -> bool:
    # JSON integers are exact ints (``type`` rather than isinstance: true and false are no dimensions)
    return (
        isinstance(shape, list)
        and len(shape) <= MAX_ARRAY_DIMS
        and all(type(d) is int and d >= 0 for d in shape)
    )


def _read_arrays(
    data: bytes,
    header: dict[str, Any],
    data_start: int,
    limits: Limits,
    request_id,
    regions: Mapping[str, memoryview] | None,
) -> tuple[dict[str, np.ndarray], frozenset[str]]:
    specs = header.pop("arrays", [])
    if not isinstance(specs, list):
        raise ProtocolViolation(ErrorCode.BAD_HEADER, "arrays must be a list", request_id)
    arrays: dict[str, np.ndarray] = {}
    used: set[str] = set()
    for spec in specs:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or spec["name"] in arrays:
            raise ProtocolViolation(ErrorCode.BAD_HEADER, "each array needs a unique string name", request_id)
        name, shape, dtype = spec["name"], spec.get("shape"), _wire_dtype_of(spec.get("dtype"))
        if dtype is None:
            raise ProtocolViolation(
                ErrorCode.BAD_DTYPE,
                f"array {name!r}: dtype {spec.get('dtype')!r} is not one of {sorted(DTYPES)}",
                request_id,
            )
        if not _is_shape(shape):
            raise ProtocolViolation(
                ErrorCode.BAD_SHAPE,
                f"array {name!r}: shape must be a list of <= {MAX_ARRAY_DIMS} non-negative integers",
                request_id,
            )
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > limits.max_message_bytes:
            raise ProtocolViolation(
                ErrorCode.TOO_LARGE, f"array {name!r} of shape {shape} would need {nbytes} bytes", request_id
            )
        source, start, where = _array_source(spec, data, data_start, regions, request_id)
        length = len(source) - start
        offset = spec.get("offset")
        if (
            spec.get("nbytes") != nbytes
            or not _is_int(offset)
            or offset % ALIGNMENT
            or not 0 <= offset <= length - nbytes
        ):
            raise ProtocolViolation(
                ErrorCode.BAD_FRAME,
                f"array {name!r}: needs nbytes={nbytes} at a multiple of {ALIGNMENT} within the "
                f"{length}-byte {where}, got nbytes={spec.get('nbytes')!r} offset={offset!r}",
                request_id,
            )
        arrays[name] = np.ndarray(shape, dtype, buffer=source, offset=start + offset)
        if source is not data:
            used.add(spec["region"])
    return arrays, frozenset(used)


def decode_message(
    data: bytes | str, limits: Limits, regions: Mapping[str, memoryview] | None = None
) -> Message:
    """Parse and check the framing of one message: header, version, type and array layout.

    Args:
        data: the message.
        limits: what the receiver accepts.
        regions: the shared-memory regions registered on the connection, by name; arrays with a ``region``
            field are views into these (an array naming any other region is a ``bad_header``).

    Raises:
        ProtocolViolation: with ``request_id`` set whenever the header carried a readable one.
    """
    if isinstance(data, str):
        raise ProtocolViolation(
            ErrorCode.BAD_FRAME, "text frames are not part of the protocol; send binary frames"
        )
    header, data_start = _read_header(data)
    request_id = _read_request_id(header)
    if not (_is_int(header.get("version")) and header["version"] == PROTOCOL_VERSION):
        raise ProtocolViolation(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {header.get('version')!r} is not supported; use {PROTOCOL_VERSION}",
            request_id,
        )
    if not isinstance(header.get("type"), str):
        raise ProtocolViolation(ErrorCode.BAD_HEADER, "header needs a string 'type'", request_id)
    return Message(header, *_read_arrays(data, header, data_start, limits, request_id, regions))


def encode_error(request_id: int | str | None, code: ErrorCode | str, message: str) -> bytearray:
    """An ``error`` reply; ``retryable`` says whether the same request may succeed if sent again."""
    return encode_message(
        {
            "type": "error",
            "request_id": request_id,
            "code": str(code),
            "message": message,
            "retryable": code in RETRYABLE_CODES,
        }
    )


# --- plan requests ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanOptions:
    """Per-request options.

    Attributes:
        k: grasps per image.
        return_q_map: also send the quality maps, for display.
        q_map_dtype: ``float16`` (q as is) or ``uint8`` (round(255 q)).
        q_map_stride: downsampling factor of the q-map (max over stride x stride blocks).
    """

    k: int = 1
    return_q_map: bool = False
    q_map_dtype: str = "float16"
    q_map_stride: int = 4


@dataclass
class PlanRequest:
    """A decoded plan request; ``depth`` and ``mask`` are read-only views into the message bytes.

    Attributes:
        request_id: the client's id, echoed in the reply.
        depth: (B, H, W) float32 depth along the optical axis [m]; 0 marks missing pixels.
        mask: optional (B, H, W) uint8 or bool; grasp centres must lie where it is nonzero.
        intrinsics: one camera for the batch or one per image.
        options: k and q-map options.
    """

    request_id: int | str
    depth: np.ndarray
    mask: np.ndarray | None
    intrinsics: CameraIntrinsics | list[CameraIntrinsics]
    options: PlanOptions

    @property
    def num_images(self) -> int:
        return self.depth.shape[0]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Depth (B, H, W) float32 sharing the message's memory, and the mask as (B, H, W) bool (a copy)."""
        depth = torch.from_numpy(self.depth)  # a read-only buffer (see _READ_ONLY_WARNING); nothing writes to it
        mask = None if self.mask is None else torch.from_numpy(self.mask.view(np.uint8) != 0)
        return depth, mask


_INTRINSICS_FLOATS = ("fx", "fy", "cx", "cy")


def _is_finite_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond float range
        return False


def _parse_camera(value: Any, request_id) -> CameraIntrinsics:
    if not isinstance(value, dict):
        raise ProtocolViolation(
            ErrorCode.BAD_HEADER, "intrinsics must be an object or a list of objects", request_id
        )
    if not all(_is_finite_number(value.get(k)) for k in _INTRINSICS_FLOATS) or not all(
        _is_int(value.get(k)) for k in ("width", "height")
    ):
        raise ProtocolViolation(
            ErrorCode.BAD_HEADER,
            "intrinsics need finite numbers fx, fy, cx, cy and integers width, height",
            request_id,
        )
    try:
        return CameraIntrinsics.from_dict(value)
    except ValueError as error:
        raise ProtocolViolation(ErrorCode.BAD_HEADER, f"intrinsics: {error}", request_id) from None


def _parse_options(header: dict[str, Any], limits: Limits, request_id) -> PlanOptions:
    k, options = header.get("k", 1), header.get("options", {})
    if not _is_int(k) or k < 1:
        raise ProtocolViolation(ErrorCode.BAD_HEADER, f"k must be a positive integer, got {k!r}", request_id)
    if k > limits.max_k:
        raise ProtocolViolation(
            ErrorCode.TOO_LARGE, f"k={k} exceeds the server's max_k={limits.max_k}", request_id
        )
    if not isinstance(options, dict):
        raise ProtocolViolation(ErrorCode.BAD_HEADER, "options must be an object", request_id)
    parsed = PlanOptions(
        k=k,
        **{
            name: options[name] for name in ("return_q_map", "q_map_dtype", "q_map_stride") if name in options
        },
    )
    stride_ok = _is_int(parsed.q_map_stride) and 1 <= parsed.q_map_stride <= MAX_Q_MAP_STRIDE
    if (
        not isinstance(parsed.return_q_map, bool)
        or parsed.q_map_dtype not in ("float16", "uint8")
        or not stride_ok
    ):
        raise ProtocolViolation(
            ErrorCode.BAD_HEADER,
            "options: return_q_map is a bool, q_map_dtype float16 or uint8, "
            f"q_map_stride an integer in [1, {MAX_Q_MAP_STRIDE}]",
            request_id,
        )
    return parsed


def decode_plan_request(message: Message, limits: Limits) -> PlanRequest:
    """Check a ``plan`` message's fields, shapes and dtypes against ``limits``.

    Depth values are checked later, off the event loop, by :func:`check_depth_values`.

    Raises:
        ProtocolViolation: bad_header, bad_dtype, bad_shape or too_large.
    """
    header, request_id = message.header, message.request_id
    if request_id is None:
        raise ProtocolViolation(ErrorCode.BAD_HEADER, "a plan request needs a request_id")
    unknown = set(message.arrays) - {"depth", "mask"}
    if unknown:
        raise ProtocolViolation(
            ErrorCode.BAD_HEADER,
            f"unknown arrays {sorted(unknown)}; a plan request has depth and mask",
            request_id,
        )
    depth, mask = message.arrays.get("depth"), message.arrays.get("mask")
    if depth is None:
        raise ProtocolViolation(ErrorCode.BAD_HEADER, "a plan request needs a depth array", request_id)
    if depth.dtype != DTYPES["float32"]:
        raise ProtocolViolation(
            ErrorCode.BAD_DTYPE, f"depth must be float32 metres, got {_wire_dtype(depth.dtype)}", request_id
        )
    if depth.ndim != 3 or 0 in depth.shape:
        raise ProtocolViolation(
            ErrorCode.BAD_SHAPE,
            f"depth must be (B, H, W) with B, H, W >= 1, got {list(depth.shape)}",
            request_id,
        )
    batch, height, width = depth.shape
    if batch > limits.max_batch_images or max(height, width) > limits.max_image_side:
        raise ProtocolViolation(
            ErrorCode.TOO_LARGE,
            f"depth {list(depth.shape)} exceeds max_batch_images={limits.max_batch_images} "
            f"or max_image_side={limits.max_image_side}",
            request_id,
        )
    if mask is not None:
        if mask.dtype not in (DTYPES["bool"], DTYPES["uint8"]):
            raise ProtocolViolation(
                ErrorCode.BAD_DTYPE, f"mask must be bool or uint8, got {_wire_dtype(mask.dtype)}", request_id
            )
        if mask.shape != depth.shape:
            raise ProtocolViolation(
                ErrorCode.BAD_SHAPE,
                f"mask {list(mask.shape)} must match depth {list(depth.shape)}",
                request_id,
            )
    raw_intrinsics = header.get("intrinsics")
    if isinstance(raw_intrinsics, list):
        intrinsics: CameraIntrinsics | list[CameraIntrinsics] = [
            _parse_camera(c, request_id) for c in raw_intrinsics
        ]
        cameras = intrinsics
    else:
        intrinsics = _parse_camera(raw_intrinsics, request_id)
        cameras = [intrinsics]
    if isinstance(intrinsics, list) and len(intrinsics) != batch:
        raise ProtocolViolation(
            ErrorCode.BAD_SHAPE, f"{len(intrinsics)} intrinsics for {batch} images", request_id
        )
    if any((c.height, c.width) != (height, width) for c in cameras):
        raise ProtocolViolation(
            ErrorCode.BAD_SHAPE,
            f"intrinsics image size differs from the depth images' {height}x{width}",
            request_id,
        )
    return PlanRequest(request_id, depth, mask, intrinsics, _parse_options(header, limits, request_id))


def check_depth_values(depth: np.ndarray, request_id: int | str | None = None) -> None:
    """Reject depth (B, H, W) with NaN or inf, or with an image that has no positive depth.

    Raises:
        ProtocolViolation: bad_depth.
    """
    flat = depth.reshape(depth.shape[0], -1)
    low, high = (
        flat.min(axis=1),
        flat.max(axis=1),
    )  # NaN propagates into both; SIMD reductions, ~20 us a megapixel
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise ProtocolViolation(
            ErrorCode.BAD_DEPTH, "depth contains NaN or inf (mark missing pixels with 0)", request_id
        )
    empty = np.flatnonzero(high <= 0).tolist()
    if empty:
        raise ProtocolViolation(ErrorCode.BAD_DEPTH, f"images {empty} have no positive depth", request_id)


def _plan_request(
    request_id: int | str,
    depth: np.ndarray,
    intrinsics: CameraIntrinsics | list[CameraIntrinsics],
    mask: np.ndarray | None,
    options: PlanOptions,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    arrays = {"depth": depth} if mask is None else {"depth": depth, "mask": mask}
    wire_intrinsics = (
        [c.to_dict() for c in intrinsics] if isinstance(intrinsics, list) else intrinsics.to_dict()
    )
    header = {
        "type": "plan",
        "request_id": request_id,
        "k": options.k,
        "intrinsics": wire_intrinsics,
        "options": {
            "return_q_map": options.return_q_map,
            "q_map_dtype": options.q_map_dtype,
            "q_map_stride": options.q_map_stride,
        },
    }
    return header, arrays


def encode_plan_request(
    request_id: int | str,
    depth: np.ndarray,
    intrinsics: CameraIntrinsics | list[CameraIntrinsics],
    mask: np.ndarray | None,
    options: PlanOptions,
    region: tuple[str, memoryview] | None = None,
) -> bytearray:
    """A ``plan`` request: depth (B, H, W) float32 [m], one or B intrinsics, optional (B, H, W) mask.

    With ``region`` (its registered name and its memory), depth and mask are copied into that shared-memory
    region and the message is the header alone (:func:`encode_message`).
    """
    return encode_message(*_plan_request(request_id, depth, intrinsics, mask, options), region)


def plan_request_fragments(
    request_id: int | str,
    depth: np.ndarray,
    intrinsics: CameraIntrinsics | list[CameraIntrinsics],
    mask: np.ndarray | None,
    options: PlanOptions,
) -> list[bytes | bytearray | memoryview]:
    """The request :func:`encode_plan_request` builds, as :func:`message_fragments` (views of ``depth``)."""
    return message_fragments(*_plan_request(request_id, depth, intrinsics, mask, options))


# --- plan replies -----------------------------------------------------------------------------------------


def grasp_orientations_cam(angle: np.ndarray) -> np.ndarray:
    """Grasp orientations in the camera frame as quaternions (..., 4) in (x, y, z, w) order.

    The grasp frame has x along the jaw (closing) axis, at ``angle`` [rad] from the image x axis towards
    image y, and z along the approach direction, the camera's optical axis; it is the camera frame turned
    by ``angle`` about its z axis. (NumPy: for a handful of grasps it is several times faster than torch.)
    """
    half = angle / 2
    quaternion = np.zeros((*angle.shape, 4), angle.dtype)
    np.sin(half, out=quaternion[..., 2])
    np.cos(half, out=quaternion[..., 3])
    return quaternion


def downsample_q_map(q_map: torch.Tensor, stride: int, dtype: str) -> np.ndarray:
    """The display q-map (B, A, ceil(h / stride), ceil(w / stride)): block maxima, as float16 or uint8.

    uint8 holds round(255 q).
    """
    pooled = (
        torch.nn.functional.max_pool2d(q_map.float(), stride, stride, ceil_mode=True)
        if stride > 1
        else q_map.float()
    )
    if dtype == "uint8":
        return (pooled.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return pooled.half().cpu().numpy()


def downsampled_grid(grid: tuple[float, float], stride: int) -> tuple[float, float]:
    """(stride, offset) [px] of a q-map with cell grid ``grid`` after block maxima over ``stride`` cells: a
    block's centre lies midway between its first and last cell."""
    cell, offset = grid
    return cell * stride, offset + cell * (stride - 1) / 2


def q_map_reply_nbytes(q_map_shape: tuple[int, ...], options: PlanOptions) -> int:
    """Bytes the display q-map of a (B, A, h, w) q-map takes in a reply."""
    b, a, h, w = q_map_shape
    stride = options.q_map_stride
    return b * a * -(-h // stride) * -(-w // stride) * DTYPES[options.q_map_dtype].itemsize


_GRASP_FIELDS = ("center", "angle", "depth", "width", "q")


def encode_plan_reply(
    request_id: int | str,
    result: PlanResult,
    options: PlanOptions,
    timings: Mapping[str, Any],
    batch: Mapping[str, int],
) -> bytearray:
    """A ``result`` reply for a CPU :class:`PlanResult` of B images.

    Arrays: ``center`` (B, k, 2) [px] (u, v); ``angle``, ``depth``, ``width``, ``q`` (B, k) [rad, m, m, 1];
    ``valid`` (B, k) bool; ``position_cam`` (B, k, 3) [m]; ``orientation_cam`` (B, k, 4) quaternion
    (x, y, z, w); and, when asked for and available, ``q_map`` (B, A, h', w') downsampled.
    """
    arrays = {name: getattr(result.grasps, name).numpy() for name in _GRASP_FIELDS}
    arrays["valid"] = result.valid.numpy()
    arrays["position_cam"] = result.positions_cam.numpy()
    arrays["orientation_cam"] = grasp_orientations_cam(arrays["angle"])
    header = {
        "type": "result",
        "request_id": request_id,
        "k": options.k,
        "timings": dict(timings),
        "batch": dict(batch),
    }
    if options.return_q_map and result.q_map is not None:
        arrays["q_map"] = downsample_q_map(result.q_map, options.q_map_stride, options.q_map_dtype)
        header["q_map_grid"] = list(downsampled_grid(result.q_map_grid, options.q_map_stride))
    return encode_message(header, arrays)


def _tensor(arrays: Mapping[str, np.ndarray], name: str) -> torch.Tensor:
    if name not in arrays:
        raise ProtocolViolation(ErrorCode.BAD_HEADER, f"reply lacks array {name!r}")
    array = arrays[name]
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def decode_plan_reply(message: Message) -> PlanResult:
    """The :class:`PlanResult` of a ``result`` reply (CPU tensors; a uint8 q-map is scaled back to [0, 1]).

    The tensors share the memory of arrays that are writable (a message decoded from a private
    ``bytearray``: one copy of the whole reply instead of one per array) and copy read-only ones.

    ``timings`` holds the planner's own stage timings plus the server's ``queue``, ``inference`` and
    ``server`` seconds (see PROTOCOL.md).
    """
    arrays = message.arrays
    grasps = ImageGrasps(**{name: _tensor(arrays, name) for name in _GRASP_FIELDS})
    q_map = None
    if "q_map" in arrays:
        q_map = _tensor(arrays, "q_map").float()
        if arrays["q_map"].dtype == DTYPES["uint8"]:
            q_map /= 255
    try:
        server_timings = message.header["timings"]
        timings = {str(k): float(v) for k, v in server_timings["planner"].items()}
        timings.update(
            {name: float(server_timings[f"{name}_s"]) for name in ("queue", "inference", "server")}
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ProtocolViolation(ErrorCode.BAD_HEADER, f"reply timings are malformed: {error!r}") from None
    grid = (1.0, 0.0)
    if q_map is not None:
        try:
            grid = tuple(float(value) for value in message.header["q_map_grid"])
        except (KeyError, TypeError, ValueError) as error:
            raise ProtocolViolation(
                ErrorCode.BAD_HEADER, f"reply q_map_grid is malformed: {error!r}"
            ) from None
        if len(grid) != 2:
            raise ProtocolViolation(ErrorCode.BAD_HEADER, "reply q_map_grid must be [stride, offset]")
    return PlanResult(grasps, _tensor(arrays, "valid"), _tensor(arrays, "position_cam"), q_map, timings, grid)
