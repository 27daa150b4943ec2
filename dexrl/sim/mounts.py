"""What carries the fingers: the 4-DoF gantry or the Franka Panda arm (``embodiment="gantry" | "franka"``).

The executor speaks TCP poses (env-local position [m] and palm yaw [rad]); a mount turns them into joint
targets of its articulation, for all envs at once:

- :class:`GantryMount`: x, y, z, yaw joints, an affine map.
- :class:`FrankaMount`: batched damped least-squares IK (:class:`~dexrl.sim.kinematics.SerialChain`, our own
  rather than Isaac Lab's ``DifferentialIKController``: it reads the chain from the USD that the engine
  loaded, so it needs no Jacobian from the physics backend, runs unchanged on CPU and GPU and in pure-tensor
  tests, and solves a pose from scratch in the same code that tracks one).

Both keep the two finger joints last. The palm's yaw is its Y (jaw) axis angle about the world Z.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, Protocol

import torch
from isaaclab.sensors import ContactSensorCfg

from dexrl.grasp import wrap_half_turn

from .franka import ARM_JOINTS, CONTACT_BODIES, FrankaCfg, franka_articulation_cfg, franka_chain, write_franka_usd
from .gripper import JOINT_NAMES, GripperCfg, gantry_articulation_cfg, write_gantry_usd
from .kinematics import IKResult, rotation_z

__all__ = ["EMBODIMENTS", "Embodiment", "FrankaMount", "GantryMount", "Mount", "embodiment_entities", "make_mount"]

Embodiment = Literal["gantry", "franka"]
EMBODIMENTS: tuple[str, ...] = ("gantry", "franka")


class Mount(Protocol):
    """Maps TCP poses to the joint targets of the articulation that carries the fingers."""

    home: torch.Tensor  # (N, J) joint positions where the mount waits, out of the camera's view
    num_arm_joints: int  # joints before the two finger joints
    max_tcp_height: float  # [m] env-local; lifts stop here
    tracking_tolerance: float  # [m] the TCP is "at" its set-point within this distance

    def reachable(self, position: torch.Tensor, yaw: torch.Tensor) -> torch.Tensor:
        """(N,) bool: the TCP pose (N, 3), (N,) can be reached (pre-grasp and grasp)."""

    def solve(self, position: torch.Tensor, yaw: torch.Tensor) -> torch.Tensor:
        """(N, J_arm) arm joints that place the TCP at the pose, from scratch (for a teleport)."""

    def track(self, arm_target: torch.Tensor, position: torch.Tensor, yaw: torch.Tensor) -> torch.Tensor:
        """(N, J_arm) the arm's joint set-points moved one physics step towards the TCP pose."""

    def tcp_pose(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """TCP position (N, 3) and palm yaw (N,) for joint positions q (N, J)."""


class GantryMount:
    """The gantry: joint_x, joint_y = TCP x, y; joint_z = TCP height shifted; joint_yaw = palm yaw."""

    num_arm_joints = 4
    tracking_tolerance = 0.0005

    def __init__(self, gripper: GripperCfg, home: torch.Tensor):
        self.gripper, self.home = gripper, home
        self.max_tcp_height = self._tcp_height(0.0)

    def _tcp_height(self, joint_z):
        return self.gripper.base_height + joint_z - self.gripper.tcp_below_base()

    def _joint_z(self, tcp_height):
        return tcp_height - self.gripper.base_height + self.gripper.tcp_below_base()

    def reachable(self, position: torch.Tensor, yaw: torch.Tensor) -> torch.Tensor:
        tx, ty, tz = self.gripper.travel
        z_joint = self._joint_z(position[:, 2])
        inside = (position[:, 0].abs() <= tx) & (position[:, 1].abs() <= ty) & (z_joint >= -tz) & (z_joint <= 0)
        return inside & torch.isfinite(yaw)

    def solve(self, position: torch.Tensor, yaw: torch.Tensor) -> torch.Tensor:
        return torch.stack((position[:, 0], position[:, 1], self._joint_z(position[:, 2]), yaw), dim=-1)

    def track(self, arm_target: torch.Tensor, position: torch.Tensor, yaw: torch.Tensor) -> torch.Tensor:
        return self.solve(position, yaw)

    def tcp_pose(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.stack((q[:, 0], q[:, 1], self._tcp_height(q[:, 2])), dim=-1), q[:, 3]


class FrankaMount:
    """The Franka arm: DLS IK to a top-down TCP pose (palm Z up, jaw at the yaw), fingers vertical.

    A pose is solved from ``franka.ik_seed`` (a posture with the hand down above the bin) for both jaw
    directions (yaw and yaw + pi grip alike) and the better one kept; tracking takes one DLS step per physics
    step from the current set-points, with the redundant joint pulled towards the seed in the null space.
    """

    num_arm_joints = 7

    def __init__(self, gripper: GripperCfg, franka: FrankaCfg, usd_path: str | Path, base_position, home: torch.Tensor):
        self.franka, self.home = franka, home
        self.chain = franka_chain(gripper, usd_path).to(home.device)
        self.base = torch.tensor(base_position, dtype=torch.float32, device=home.device)
        self.seed = torch.tensor(franka.ik_seed, device=home.device)
        self.tracking_tolerance = franka.arrival_tolerance
        self.max_tcp_height = franka.max_tcp_height

    def _best_solution(self, position: torch.Tensor, yaw: torch.Tensor) -> IKResult:
        """The IK solution for the jaw at ``yaw`` or at ``yaw + pi`` (they grip alike), whichever ends closer to
        its target (errors measured in units of the tolerances)."""
        seed = self.seed.expand(len(yaw), -1)
        franka = self.franka
        first, second = (
            self.chain.solve(seed, position - self.base, rotation_z(yaw + turn), franka.ik_iterations,
                             franka.ik_damping, rest=seed, rest_gain=franka.ik_rest_gain)
            for turn in (0.0, math.pi)
        )

        def badness(result: IKResult) -> torch.Tensor:
            return result.position_error / franka.position_tolerance + result.angle_error / franka.angle_tolerance

        take_second = badness(second) < badness(first)
        return IKResult(
            torch.where(take_second.unsqueeze(-1), second.joint_pos, first.joint_pos),
            torch.where(take_second, second.position_error, first.position_error),
            torch.where(take_second, second.angle_error, first.angle_error),
        )

    def solve(self, position: torch.Tensor, yaw: torch.Tensor) -> torch.Tensor:
        return self._best_solution(position, yaw).joint_pos

    def reachable(self, position: torch.Tensor, yaw: torch.Tensor) -> torch.Tensor:
        best = self._best_solution(position, yaw)
        return (best.position_error <= self.franka.position_tolerance) & (best.angle_error <= self.franka.angle_tolerance)

    def track(self, arm_target: torch.Tensor, position: torch.Tensor, yaw: torch.Tensor) -> torch.Tensor:
        # The jaw direction was chosen by solve(): keep the one nearer the current set-points' palm yaw.
        current = self.tcp_pose(arm_target)[1]
        yaw = current + wrap_half_turn(yaw - current)
        return self.chain.dls_step(arm_target, position - self.base, rotation_z(yaw), self.franka.ik_damping,
                                   rest=self.seed.expand_as(arm_target), rest_gain=self.franka.ik_rest_gain)

    def tcp_pose(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, tcp = self.chain.forward(q[:, : self.num_arm_joints])
        return tcp[:, :3, 3] + self.base, torch.atan2(tcp[:, 1, 0], tcp[:, 0, 0])


def embodiment_entities(embodiment: Embodiment, gripper: GripperCfg, asset_folder, franka: FrankaCfg | None = None) -> dict:
    """Scene entities of the mount with the fingers: the articulation and a contact sensor on the bodies whose
    contacts stop a descent (palm and pads; on the arm also its wrist)."""
    if embodiment == "gantry":
        articulation = gantry_articulation_cfg(gripper, write_gantry_usd(gripper, Path(asset_folder)))
        contact_bodies = "(palm|finger_l|finger_r)"
    elif embodiment == "franka":
        articulation = franka_articulation_cfg(gripper, franka or FrankaCfg(), write_franka_usd(gripper, Path(asset_folder)))
        contact_bodies = CONTACT_BODIES
    else:
        raise ValueError(f"unknown embodiment {embodiment!r}; choose one of {EMBODIMENTS}")
    return {
        "gripper": articulation,
        "gripper_contacts": ContactSensorCfg(prim_path="{ENV_REGEX_NS}/Gripper/" + contact_bodies),
    }


def make_mount(robot, gripper: GripperCfg, franka: FrankaCfg | None = None) -> Mount:
    """The mount of a spawned articulation, told apart by its joint names; the Franka's chain, base and home come
    from the articulation's own cfg and USD, ``franka`` gives the IK settings."""
    names = tuple(robot.joint_names)
    home = robot.data.default_joint_pos.torch.clone()
    if names == JOINT_NAMES:
        return GantryMount(gripper, home)
    if names == (*ARM_JOINTS, "finger_l_joint", "finger_r_joint"):
        cfg = robot.cfg
        return FrankaMount(gripper, franka or FrankaCfg(), cfg.spawn.usd_path, cfg.init_state.pos, home)
    raise RuntimeError(f"unexpected gripper joints {names}")
