"""gqcnn_bridge wire format, in process: framing round trips, layout rules, reply codec, error mapping."""

import json
import math
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dexrl.grasp import (
    PHOXI_S,
    ImageGrasps,
    NoValidGrasps,
    PlannerError,
    PlannerInputError,
    PlannerUnavailable,
    PlanResult,
)
from gqcnn_bridge.protocol import (
    ALIGNMENT,
    DTYPES,
    FRAGMENT_BYTES,
    ErrorCode,
    Limits,
    PlanOptions,
    ProtocolViolation,
    as_fragments,
    decode_message,
    decode_plan_reply,
    decode_plan_request,
    downsample_q_map,
    encode_message,
    encode_plan_reply,
    encode_plan_request,
    grasp_orientations_cam,
    message_fragments,
    planner_error_for,
)

arrays = hnp.arrays(
    dtype=st.sampled_from(list(DTYPES.values())),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
)


@settings(max_examples=150, deadline=None)
@given(
    named=st.dictionaries(st.text(min_size=1, max_size=8), arrays, max_size=4),
    request_id=st.integers(0, 2**53 - 1),
)
def test_any_arrays_survive_framing_bit_for_bit(named, request_id):
    message = bytes(encode_message({"type": "probe", "request_id": request_id}, named))
    decoded = decode_message(message, Limits())
    (header_length,) = struct.unpack_from("<I", message)
    data_start = -(-(4 + header_length) // ALIGNMENT) * ALIGNMENT
    assert decoded.header["request_id"] == request_id and decoded.type == "probe"
    assert list(decoded.arrays) == list(named)
    for name, array in named.items():
        assert (
            decoded.arrays[name].dtype == array.dtype.newbyteorder("<")
            and decoded.arrays[name].shape == array.shape
        )
        assert decoded.arrays[name].tobytes() == array.tobytes()  # bit for bit, NaN payloads included
        address = (
            decoded.arrays[name].__array_interface__["data"][0]
            - np.frombuffer(message, np.uint8).__array_interface__["data"][0]
        )
        assert (address - data_start) % ALIGNMENT == 0


def test_large_messages_are_fragmented_and_small_ones_sent_whole():
    small = encode_message({"type": "probe"}, {"a": np.zeros(10, np.float32)})
    large = encode_message({"type": "probe"}, {"a": np.arange(700_000, dtype=np.float32)})
    assert as_fragments(small) is small
    fragments = as_fragments(large)
    assert (
        len(fragments) == math.ceil(len(large) / FRAGMENT_BYTES)
        and max(len(f) for f in fragments) <= FRAGMENT_BYTES
    )
    assert b"".join(fragments) == large


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(
        st.sampled_from([0, 1, 3, 100, *(FRAGMENT_BYTES // 4 + d for d in (-1, 0, 1)), 600_000]), max_size=4
    ),
    header_chars=st.sampled_from([0, 20, FRAGMENT_BYTES - 36, FRAGMENT_BYTES, 2 * FRAGMENT_BYTES + 20]),
)
def test_message_fragments_are_the_encoded_message_in_pieces(sizes, header_chars):
    rng = np.random.default_rng(len(sizes) + header_chars)
    dtypes = ("<f4", ">f4", "u1", "?", "<f2", "<i8")
    named = {f"a{i}": rng.random(n).astype(dtypes[i % len(dtypes)]) for i, n in enumerate(sizes)}
    header = {"type": "probe", "note": "x" * header_chars}
    fragments = message_fragments(header, named)
    assert b"".join(bytes(f) for f in fragments) == encode_message(header, named)
    assert len(fragments) == 1 or all(0 < len(f) <= FRAGMENT_BYTES for f in fragments)


def test_a_small_message_is_one_piece_and_a_large_one_shares_the_arrays_memory():
    small = {"a": np.arange(1000, dtype=np.float32)}
    (whole,) = message_fragments({"type": "probe"}, small)
    assert whole == encode_message({"type": "probe"}, small)
    depth = np.random.default_rng(0).random((4, 386, 516), dtype=np.float32)  # 3.2 MB
    fragments = message_fragments({"type": "plan"}, {"depth": depth})
    views = [f for f in fragments if isinstance(f, memoryview)]
    assert sum(len(v) for v in views) > depth.nbytes - 2 * FRAGMENT_BYTES  # all but the ends are not copied
    assert all(np.shares_memory(np.frombuffer(v, np.uint8), depth) for v in views)


def _plan_request_bytes(depth, intrinsics=PHOXI_S, mask=None, **options):
    return bytes(encode_plan_request(7, depth, intrinsics, mask, PlanOptions(**options)))


def test_plan_request_decodes_to_views_of_what_was_sent():
    rng = np.random.default_rng(0)
    camera = PHOXI_S.scaled(1 / 16)
    depth = rng.uniform(0.5, 0.7, (2, camera.height, camera.width)).astype(np.float32)
    mask = rng.random(depth.shape) > 0.5
    request = decode_plan_request(
        decode_message(_plan_request_bytes(depth, [camera, camera], mask, k=3, return_q_map=True), Limits()),
        Limits(),
    )
    tensor_depth, tensor_mask = request.tensors()
    assert request.request_id == 7 and request.options == PlanOptions(k=3, return_q_map=True)
    assert request.intrinsics == [camera, camera]
    assert torch.equal(tensor_depth, torch.from_numpy(depth)) and torch.equal(
        tensor_mask, torch.from_numpy(mask)
    )


@pytest.mark.parametrize(
    "edit, code",
    [
        (lambda h: h.update(version=True), ErrorCode.UNSUPPORTED_VERSION),  # JSON true must not pass for 1
        (lambda h: h.update(version=1.0), ErrorCode.UNSUPPORTED_VERSION),
        (lambda h: h.update(k=True), ErrorCode.BAD_HEADER),
        (lambda h: h.update(k=10**6), ErrorCode.TOO_LARGE),
        (lambda h: h["intrinsics"].update(fx=10**400), ErrorCode.BAD_HEADER),  # beyond float range
        (lambda h: h["intrinsics"].update(fx=-1.0), ErrorCode.BAD_HEADER),
        (lambda h: h["intrinsics"].update(width=5), ErrorCode.BAD_SHAPE),
        (lambda h: h["arrays"][0].update(offset=4), ErrorCode.BAD_FRAME),  # misaligned
        (lambda h: h["arrays"][0].update(shape=[1, 10**5, 10**5]), ErrorCode.TOO_LARGE),
        (lambda h: h["arrays"][0].update(dtype="float128"), ErrorCode.BAD_DTYPE),
        (lambda h: h["arrays"][0].update(dtype=["float32"]), ErrorCode.BAD_DTYPE),  # not a string
        (lambda h: h["arrays"][0].update(shape=[1, True, 4]), ErrorCode.BAD_SHAPE),
        (lambda h: h.update(options={"q_map_stride": 0}), ErrorCode.BAD_HEADER),
    ],
)
def test_request_fields_are_checked_with_typed_codes(edit, code):
    camera = PHOXI_S.scaled(1 / 32)
    message = _plan_request_bytes(np.full((1, camera.height, camera.width), 0.6, np.float32), camera)
    (length,) = struct.unpack_from("<I", message)
    header = json.loads(message[4 : 4 + length])
    edit(header)
    data = message[-(-(4 + length) // ALIGNMENT) * ALIGNMENT :]
    prefix = struct.pack("<I", len(text := json.dumps(header).encode())) + text
    with pytest.raises(ProtocolViolation) as caught:
        decode_plan_request(
            decode_message(prefix + bytes(-len(prefix) % ALIGNMENT) + data, Limits()), Limits()
        )
    assert caught.value.code == code and caught.value.request_id == 7


def test_deep_json_nesting_is_a_bad_header_not_a_crash():
    text = b"[" * 100_000
    with pytest.raises(ProtocolViolation) as caught:
        decode_message(struct.pack("<I", len(text)) + text, Limits())
    assert caught.value.code == ErrorCode.BAD_HEADER


def test_plan_reply_round_trip_is_exact_and_q_map_is_downsampled():
    generator = torch.Generator().manual_seed(0)
    b, k = 2, 3
    grasps = ImageGrasps(
        center=torch.rand(b, k, 2, generator=generator) * 100,
        angle=torch.rand(b, k, generator=generator) - 0.5,
        depth=torch.rand(b, k, generator=generator),
        width=torch.full((b, k), 0.05),
        q=torch.rand(b, k, generator=generator),
    )
    q_map = torch.rand(b, 4, 9, 11, generator=generator)
    result = PlanResult(
        grasps,
        torch.rand(b, k, generator=generator) > 0.3,
        torch.rand(b, k, 3, generator=generator),
        q_map,
        {"network": 0.5},
        q_map_grid=(4, 48),
    )
    options = PlanOptions(k=k, return_q_map=True, q_map_dtype="uint8", q_map_stride=4)
    timings = {"queue_s": 0.001, "inference_s": 0.002, "server_s": 0.004, "planner": {"network": 0.5}}
    reply = decode_message(
        bytes(encode_plan_reply(5, result, options, timings, {"requests": 1, "images": b})), Limits()
    )
    decoded = decode_plan_reply(reply)
    assert decoded.q_map_grid == (16.0, 54.0)  # 4 cells of stride 4 per block, centred 6 px past the first
    assert reply.request_id == 5 and decoded.timings == {
        "network": 0.5,
        "queue": 0.001,
        "inference": 0.002,
        "server": 0.004,
    }
    for name in ("center", "angle", "depth", "width", "q"):
        assert torch.equal(getattr(decoded.grasps, name), getattr(grasps, name))
    assert torch.equal(decoded.valid, result.valid) and torch.equal(
        decoded.positions_cam, result.positions_cam
    )
    assert decoded.q_map.shape == (b, 4, 3, 3)
    block_max = q_map[:, :, 4:8, 8:11].amax(dim=(2, 3))  # the (1, 2) block, clipped at the border
    assert torch.allclose(decoded.q_map[:, :, 1, 2], block_max, atol=0.5 / 255)
    assert np.array_equal(reply.arrays["q_map"], downsample_q_map(q_map, 4, "uint8"))


def test_orientation_quaternion_turns_the_camera_x_axis_onto_the_jaw_axis():
    angle = torch.tensor([-1.5, -0.3, 0.0, 0.7, 1.5])
    x, y, z, w = torch.from_numpy(grasp_orientations_cam(angle.numpy())).unbind(-1)
    # first column of the rotation matrix of a unit quaternion (x, y, z, w)
    jaw_axis = torch.stack((1 - 2 * (y**2 + z**2), 2 * (x * y + w * z), 2 * (x * z - w * y)), -1)
    assert torch.allclose(
        jaw_axis, torch.stack((torch.cos(angle), torch.sin(angle), torch.zeros_like(angle)), -1), atol=1e-6
    )


@pytest.mark.parametrize(
    "code, expected",
    [
        (ErrorCode.BAD_DEPTH, PlannerInputError),
        (ErrorCode.TOO_LARGE, PlannerInputError),
        (ErrorCode.NO_VALID_GRASPS, NoValidGrasps),
        (ErrorCode.OVERLOADED, PlannerUnavailable),
        (ErrorCode.SHUTTING_DOWN, PlannerUnavailable),
        (ErrorCode.UNAUTHORIZED, PlannerError),
        ("a_code_from_the_future", PlannerError),
    ],
)
def test_error_replies_become_the_planner_errors_local_planners_raise(code, expected):
    error = planner_error_for(code, "why")
    assert type(error) is expected and error.code == code and str(error) == "why"
