"""Batched kinematics of a serial arm of revolute joints: forward kinematics, geometric Jacobian and damped
least-squares (DLS) inverse kinematics for all envs at once, in PyTorch.

The chain is read from the articulation's USD (:meth:`SerialChain.from_usd`), so the kinematics the IK uses are
the ones the physics engine loaded. Everything is plain tensor arithmetic with a fixed number of iterations: no
host synchronisation, no Python loop over envs (it can run inside a captured CUDA graph).

Frames are 4x4 homogeneous transforms; a pose target is a TCP position (N, 3) [m] and rotation (N, 3, 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["IKResult", "SerialChain", "orientation_error", "quat_of", "rotation_z", "transform"]


def transform(position, quat_wxyz) -> torch.Tensor:
    """(4, 4) float64 transform from a position and a unit quaternion (w, x, y, z)."""
    w, x, y, z = (float(v) for v in quat_wxyz)
    rotation = torch.tensor(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ],
        dtype=torch.float64,
    )
    out = torch.eye(4, dtype=torch.float64)
    out[:3, :3] = rotation
    out[:3, 3] = torch.tensor([float(v) for v in position], dtype=torch.float64)
    return out


def quat_of(rotation: torch.Tensor) -> tuple[float, float, float, float]:
    """Unit quaternion (w, x, y, z) of a (3, 3) rotation matrix (any rotation, including half turns)."""
    m = rotation.double()
    w2, x2, y2, z2 = (1 + m[0, 0] + m[1, 1] + m[2, 2], 1 + m[0, 0] - m[1, 1] - m[2, 2],
                      1 - m[0, 0] + m[1, 1] - m[2, 2], 1 - m[0, 0] - m[1, 1] + m[2, 2])
    largest = int(torch.argmax(torch.stack((w2, x2, y2, z2))))
    if largest == 0:
        w = torch.sqrt(w2) / 2
        q = (w, (m[2, 1] - m[1, 2]) / (4 * w), (m[0, 2] - m[2, 0]) / (4 * w), (m[1, 0] - m[0, 1]) / (4 * w))
    elif largest == 1:
        x = torch.sqrt(x2) / 2
        q = ((m[2, 1] - m[1, 2]) / (4 * x), x, (m[0, 1] + m[1, 0]) / (4 * x), (m[0, 2] + m[2, 0]) / (4 * x))
    elif largest == 2:
        y = torch.sqrt(y2) / 2
        q = ((m[0, 2] - m[2, 0]) / (4 * y), (m[0, 1] + m[1, 0]) / (4 * y), y, (m[1, 2] + m[2, 1]) / (4 * y))
    else:
        z = torch.sqrt(z2) / 2
        q = ((m[1, 0] - m[0, 1]) / (4 * z), (m[0, 2] + m[2, 0]) / (4 * z), (m[1, 2] + m[2, 1]) / (4 * z), z)
    return tuple(float(v) for v in q)


def rotation_z(angle: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotations about Z by ``angle`` [rad]."""
    c, s = torch.cos(angle), torch.sin(angle)
    zero, one = torch.zeros_like(angle), torch.ones_like(angle)
    return torch.stack((c, -s, zero, s, c, zero, zero, zero, one), dim=-1).reshape(*angle.shape, 3, 3)


def _homogeneous(rotation: torch.Tensor) -> torch.Tensor:
    """(..., 4, 4) transforms of (..., 3, 3) rotations (no translation)."""
    out = torch.zeros(*rotation.shape[:-2], 4, 4, dtype=rotation.dtype, device=rotation.device)
    out[..., :3, :3] = rotation
    out[..., 3, 3] = 1.0
    return out


def orientation_error(rotation: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N, 3) rotation vector that turns ``rotation`` towards ``target`` (both (N, 3, 3)), for small errors;
    its norm is sin(angle) for a rotation about one axis."""
    return 0.5 * torch.linalg.cross(rotation, target, dim=-2).sum(dim=-1)


@dataclass
class IKResult:
    """Joint positions (N, J) [rad] and their TCP's remaining position error (N,) [m] and angle error (N,) [rad]."""

    joint_pos: torch.Tensor
    position_error: torch.Tensor
    angle_error: torch.Tensor


class SerialChain:
    """A serial chain of revolute joints, each turning about the Z axis of its joint frame.

    Args:
        joint_frames: (J, 4, 4) pose of each joint frame in the previous joint's (moving) frame; the first one in
            the arm's base frame.
        lower, upper: (J,) joint limits [rad].
        tool: (4, 4) the TCP in the last joint's frame.
    """

    def __init__(self, joint_frames: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, tool: torch.Tensor):
        self.joint_frames, self.lower, self.upper, self.tool = joint_frames, lower, upper, tool

    @property
    def num_joints(self) -> int:
        return self.joint_frames.shape[0]

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> SerialChain:
        return SerialChain(*(t.to(device, dtype) for t in (self.joint_frames, self.lower, self.upper, self.tool)))

    @classmethod
    def from_usd(cls, stage, joint_names: list[str], tool_joint: str | None = None, tcp_offset=(0.0, 0.0, 0.0)):
        """Read the chain from an articulation's USD stage (or file path): the revolute ``joint_names`` about Z,
        in order from the base, then the fixed ``tool_joint`` to the hand (none: the TCP is the last joint's
        frame) and the TCP at ``tcp_offset`` [m] in the hand's frame."""
        import math  # noqa: PLC0415

        from pxr import Usd, UsdPhysics  # noqa: PLC0415

        if not isinstance(stage, Usd.Stage):
            stage = Usd.Stage.Open(str(stage))
        joints = {prim.GetName(): prim for prim in stage.Traverse() if prim.IsA(UsdPhysics.Joint)}
        missing = [name for name in [*joint_names, *([tool_joint] if tool_joint else [])] if name not in joints]
        if missing:
            raise ValueError(f"{stage.GetRootLayer().identifier}: no joints named {missing}")

        def frame_in_parent(prim) -> torch.Tensor:
            joint = UsdPhysics.Joint(prim)
            rot0, rot1 = joint.GetLocalRot0Attr().Get(), joint.GetLocalRot1Attr().Get()
            pos1 = joint.GetLocalPos1Attr().Get()
            if any(abs(v) > 1e-9 for v in pos1):
                raise ValueError(f"{prim.GetPath()}: the joint frame must sit at the child's origin")
            # The constraint holds parent @ frame0 == child @ frame1, so the child sits at frame0 @ frame1^-1.
            parent_side = transform(joint.GetLocalPos0Attr().Get(), (rot0.GetReal(), *rot0.GetImaginary()))
            child_side = transform((0, 0, 0), (rot1.GetReal(), *rot1.GetImaginary()))
            return parent_side @ torch.linalg.inv(child_side)

        frames, lower, upper = [], [], []
        for name in joint_names:
            revolute = UsdPhysics.RevoluteJoint(joints[name])
            if revolute.GetAxisAttr().Get() != "Z":
                raise ValueError(f"{name}: expected a revolute joint about Z")
            frames.append(frame_in_parent(joints[name]))
            lower.append(math.radians(revolute.GetLowerLimitAttr().Get()))
            upper.append(math.radians(revolute.GetUpperLimitAttr().Get()))
        hand = frame_in_parent(joints[tool_joint]) if tool_joint else torch.eye(4, dtype=torch.float64)
        tool = hand @ transform(tcp_offset, (1, 0, 0, 0))
        return cls(torch.stack(frames), torch.tensor(lower, dtype=torch.float64), torch.tensor(upper, dtype=torch.float64), tool)

    # ------------------------------------------------------------------ kinematics
    def forward(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint frames (N, J, 4, 4) and the TCP frame (N, 4, 4) in the base frame for joint positions q (N, J)."""
        frame = torch.eye(4, dtype=q.dtype, device=q.device).expand(q.shape[0], 4, 4)
        frames = []
        for j in range(self.num_joints):
            frame = frame @ self.joint_frames[j] @ _homogeneous(rotation_z(q[:, j]))
            frames.append(frame)
        return torch.stack(frames, dim=1), frame @ self.tool

    def jacobian(self, frames: torch.Tensor, tcp: torch.Tensor) -> torch.Tensor:
        """(N, 6, J) geometric Jacobian of the TCP (linear velocity rows first) from :meth:`forward`'s output."""
        axes = frames[:, :, :3, 2]  # (N, J, 3)
        lever = tcp[:, None, :3, 3] - frames[:, :, :3, 3]
        return torch.cat((torch.linalg.cross(axes, lever, dim=-1), axes), dim=-1).transpose(1, 2)

    def dls_step(self, q: torch.Tensor, position: torch.Tensor, rotation: torch.Tensor, damping: float,
                 rest: torch.Tensor | None = None, rest_gain: float = 0.0, max_step: float = 0.2) -> torch.Tensor:
        """One damped least-squares step of q (N, J) towards the TCP target, clamped to the joint limits.

        dq = J^T (J J^T + damping^2 I)^-1 e, plus ``rest_gain`` times the pull towards ``rest`` projected into
        the task's null space (the 7th joint's freedom); each joint moves at most ``max_step`` [rad]."""
        frames, tcp = self.forward(q)
        jac = self.jacobian(frames, tcp)
        error = torch.cat((position - tcp[:, :3, 3], orientation_error(tcp[:, :3, :3], rotation)), dim=-1)
        gram = jac @ jac.transpose(1, 2) + damping**2 * torch.eye(6, dtype=q.dtype, device=q.device)
        pseudo_inverse = jac.transpose(1, 2) @ torch.linalg.inv(gram)  # (N, J, 6)
        dq = (pseudo_inverse @ error.unsqueeze(-1)).squeeze(-1)
        if rest is not None and rest_gain > 0:
            null = torch.eye(q.shape[1], dtype=q.dtype, device=q.device) - pseudo_inverse @ jac
            dq = dq + rest_gain * (null @ (rest - q).unsqueeze(-1)).squeeze(-1)
        return torch.clamp(q + dq.clamp(-max_step, max_step), self.lower, self.upper)

    def solve(self, q: torch.Tensor, position: torch.Tensor, rotation: torch.Tensor, iterations: int = 100,
              damping: float = 0.05, rest: torch.Tensor | None = None, rest_gain: float = 0.0) -> IKResult:
        """Iterate :meth:`dls_step` from q (N, J) a fixed number of times; returns the joints and their errors."""
        for _ in range(iterations):
            q = self.dls_step(q, position, rotation, damping, rest, rest_gain)
        return IKResult(q, *self.pose_error(q, position, rotation))

    def pose_error(self, q: torch.Tensor, position: torch.Tensor, rotation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) TCP position error [m] and (N,) angle between the TCP and target rotations [rad] at q."""
        _, tcp = self.forward(q)
        relative = tcp[:, :3, :3].transpose(1, 2) @ rotation
        cos = ((relative.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1.0, 1.0)
        return torch.linalg.norm(position - tcp[:, :3, 3], dim=-1), torch.arccos(cos)
