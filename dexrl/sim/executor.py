"""Vectorized parallel-jaw grasp executor: one grasp attempt per env, all envs in lock-step.

The attempt is a tensor state machine (no Python loop over envs):

    PRE-GRASP (gantry placed above the grasp) -> DESCEND (stop early on contact) -> CLOSE (until the fingers
    stall or close) -> LIFT -> HOLD -> judged -> released

Every attempt ends in exactly one :class:`Outcome`. Success means that one of the env's placed objects is
between the pads, lifted by at least ``lift_threshold`` above where it lay, at the end of the hold time.
An attempt whose jaw has shut after the close (nothing can be held any more) is judged then: EMPTY or SLIP.
The grasped object then leaves the bin (it is parked); the bin is re-drawn when empty or after
``attempts_per_heap`` attempts. A non-finite or exploding state, or an object thrown out of the bin,
resets that env only and is counted as a fault. All re-draws of a batch (faults, empty and spent bins) share
one :meth:`BinWorld.new_round`, which waits at most ``settings.settle.redraw_timeout`` for them to settle.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch

from isaaclab.utils import configclass

from dexrl.grasp import GraspPoses, wrap_half_turn

from .bin_world import BinWorld
from .gripper import GripperCfg
from .mounts import make_mount

__all__ = ["ExecutorCfg", "GraspExecutor", "Outcome", "AttemptResult"]


class Outcome(enum.IntEnum):
    """How a grasp attempt ended (one per attempt)."""

    SUCCESS = 0
    EMPTY = 1  # the fingers closed on nothing
    SLIP = 2  # something was between the fingers after closing, but nothing was held after the hold
    COLLISION = 3  # the gripper hit something well above the grasp depth, before closing
    TIMEOUT = 4  # a phase took longer than its limit
    INVALID = 5  # the pose is outside the gantry's reach or below the bin floor
    FAULT = 6  # non-finite or exploding state, or an object thrown out of the bin: the env was reset


class Phase(enum.IntEnum):
    DESCEND = 0
    CLOSE = 1
    LIFT = 2
    HOLD = 3
    DONE = 4


@configclass
class ExecutorCfg:
    """Motion and judgement parameters of a grasp attempt (metres, seconds, newtons)."""

    approach_distance: float = 0.08  # [m] the gantry starts this far above the grasp (and above the walls)
    descend_speed: float = 0.3  # [m/s]
    lift_speed: float = 0.2  # [m/s]; faster lifts shook boxes loose in the hold (measured at 0.3)
    deceleration: float = 1.5  # [m/s^2] motions ease out at this rate; an abrupt stop shakes the object loose
    lift_height: float = 0.15  # [m]
    hold_time: float = 0.5  # [s]
    close_time_min: float = 0.15  # [s] before the fingers may count as stalled
    close_time_max: float = 0.6  # [s]
    contact_force: float = 2.0  # [N] on the palm or pads during the descent stops it
    collision_margin: float = 0.015  # [m] a stop further than this above the grasp depth is a collision
    lift_threshold: float = 0.10  # [m] the held object must rise at least this much
    phase_timeout: float = 2.0  # [s] per phase
    attempts_per_heap: int = 10  # the bin is re-drawn after this many attempts (or when empty)
    max_speed: float = 20.0  # [m/s] an object faster than this is a fault
    shut_opening: float = 0.001  # [m] a jaw this far closed after the close holds nothing (as in the judgement)


@dataclass
class AttemptResult:
    """Per env result of one batch of attempts (tensors on the world's device)."""

    outcome: torch.Tensor  # (N,) long, Outcome values
    grasped: torch.Tensor  # (N,) long, pool slot of the held object or -1
    commanded: GraspPoses  # the env-local TCP poses it was asked to reach
    reached: GraspPoses  # the env-local TCP poses where the fingers started to close (zeros where they did not)
    duration: torch.Tensor  # (N,) simulated seconds
    depth_after_lift: torch.Tensor | None = None  # (N, H, W) [m] rendered at the end of the hold, if asked


class GraspExecutor:
    """Executes one top-down grasp per env on a :class:`BinWorld` that holds the fingers on a mount (the gantry
    or the Franka arm, :mod:`dexrl.sim.mounts`); the attempt, its outcomes and its judgement do not depend on it.

    Args:
        world: a world built with :func:`~dexrl.sim.mounts.embodiment_entities` as extras.
        gripper: the gripper cfg it was built with.
        cfg: executor parameters.
    """

    def __init__(self, world: BinWorld, gripper: GripperCfg, cfg: ExecutorCfg | None = None):
        self.world, self.gripper, self.cfg = world, gripper, cfg or ExecutorCfg()
        self.robot = world.scene["gripper"]
        self.contacts = world.scene["gripper_contacts"]
        self.device = world.device
        self.mount = make_mount(self.robot, gripper, world.settings.franka)
        self.home = self.mount.home
        self.attempts_on_heap = torch.zeros(world.num_envs, dtype=torch.long, device=self.device)
        self.fault_count = 0
        self.redrawn_heaps = 0  # heaps re-drawn between attempts (faults, empty and spent bins)
        self.redrawn_settled = 0  # of those, how many were at rest before the next attempt
        # The end-of-attempt check costs a host sync on a GPU: there only every few steps.
        self._check_every = 1 if self.device.type == "cpu" else 10
        self._teleport(self.home)  # the articulation starts at zero joint positions, in the camera's view
        world.step()

    # ------------------------------------------------------------------ geometry
    def tcp_positions(self) -> torch.Tensor:
        """Env-local TCP positions (N, 3) from the joint state [m]."""
        return self.mount.tcp_pose(self.robot.data.joint_pos.torch)[0]

    def reachable(self, poses: GraspPoses) -> torch.Tensor:
        """(N,) bool: the env-local grasp pose is within the mount's reach and not below the bin floor."""
        local = poses.position
        finite = torch.isfinite(local).all(dim=-1) & torch.isfinite(poses.yaw)
        position = torch.where(finite.unsqueeze(-1), local, torch.zeros_like(local))
        inside = self.mount.reachable(position, self._palm_yaw(torch.where(finite, poses.yaw, 0.0)))
        return finite & inside & (local[:, 2] >= self.world.settings.bin.floor_z)

    @staticmethod
    def _palm_yaw(grasp_yaw: torch.Tensor) -> torch.Tensor:
        """Palm yaw [rad] that puts the palm's Y (the jaw axis) along the grasp axis."""
        return wrap_half_turn(grasp_yaw) - math.pi / 2

    # ------------------------------------------------------------------ attempt
    def execute(self, poses: GraspPoses, render_after_lift: bool = False) -> AttemptResult:
        """Run one attempt per env to the world-frame TCP ``poses`` (N grasps) and judge them.

        ``render_after_lift`` also renders the depth images at the end of the hold (gripper in view)."""
        world, cfg, dt = self.world, self.cfg, self.world.dt
        n, dev = world.num_envs, self.device
        local = GraspPoses(position=poses.position.to(dev) - world.env_origins, yaw=poses.yaw.to(dev), width=poses.width.to(dev))
        yaw = self._palm_yaw(local.yaw)
        mount, fingers = self.mount, slice(self.mount.num_arm_joints, None)

        wall_top = float(world.interior_bounds[5])
        goal = local.position
        goal_z = goal[:, 2]
        start_z = torch.maximum(goal_z + cfg.approach_distance, torch.full_like(goal_z, wall_top + 0.03))
        start_z = start_z.clamp(max=mount.max_tcp_height)
        start = torch.cat((local.position[:, :2], start_z.unsqueeze(-1)), dim=-1)
        valid = self.reachable(local) & self.reachable(GraspPoses(start, local.yaw, local.width))
        outcome = torch.where(valid, -1, int(Outcome.INVALID))

        # Invalid envs wait at home; the others start above their grasp with the fingers open.
        set_position = torch.where(valid.unsqueeze(-1), start, mount.tcp_pose(self.home)[0])
        target = self.home.clone()
        arm = mount.solve(torch.where(valid.unsqueeze(-1), start, torch.zeros_like(start)), torch.where(valid, yaw, 0.0))
        target[:, :mount.num_arm_joints] = torch.where(valid.unsqueeze(-1), arm, self.home[:, :mount.num_arm_joints])
        target[:, fingers] = self.gripper.max_opening / 2
        self._teleport(target)
        world.step()  # refresh the contact buffers, which still hold the last step before the teleport

        object_start = world.object_positions().clone()
        placed = world.round.placed
        phase = torch.where(valid, Phase.DESCEND, Phase.DONE).long()
        phase_time = torch.zeros(n, device=dev)
        elapsed = torch.zeros(n, device=dev)
        lift_z = torch.zeros(n, device=dev)
        had_object = torch.zeros(n, dtype=torch.bool, device=dev)
        still_steps = torch.zeros(n, dtype=torch.long, device=dev)
        previous_q = self.robot.data.joint_pos.torch[:, fingers].clone()
        finished_hold = torch.zeros(n, dtype=torch.bool, device=dev)
        reached_position = torch.zeros(n, 3, device=dev)
        reached_yaw = torch.zeros(n, device=dev)

        max_steps = round(5 * cfg.phase_timeout / dt)
        for step in range(1, max_steps + 1):
            active = phase < Phase.DONE
            q = self.robot.data.joint_pos.torch
            tcp, tcp_yaw = mount.tcp_pose(q)
            tcp_z, finger_q = tcp[:, 2], q[:, fingers]
            force = torch.linalg.norm(self.contacts.data.net_forces_w.torch, dim=-1).amax(dim=-1)

            # DESCEND: ramp the TCP set-point down; stop on contact, far above the goal means a collision.
            descending = phase == Phase.DESCEND
            set_z = torch.where(descending, self._ramp(set_position[:, 2], goal_z, cfg.descend_speed), set_position[:, 2])
            hit = descending & (force > cfg.contact_force)
            collided = hit & (tcp_z - goal_z > cfg.collision_margin)
            arrived = descending & (torch.linalg.norm(tcp - goal, dim=-1) < mount.tracking_tolerance)
            to_close = descending & ~collided & (hit | arrived)
            reached_position = torch.where(to_close.unsqueeze(-1), tcp, reached_position)
            reached_yaw = torch.where(to_close, wrap_half_turn(tcp_yaw + math.pi / 2), reached_yaw)
            set_z = torch.where(to_close, tcp_z, set_z)  # hold where the descent stopped
            outcome = torch.where(collided, torch.full_like(outcome, Outcome.COLLISION), outcome)
            phase = torch.where(collided, torch.full_like(phase, Phase.DONE), phase)

            # CLOSE: drive both fingers shut; done when they stall (after a minimum time) or at the maximum.
            closing = phase == Phase.CLOSE
            target[:, fingers] = torch.where(closing.unsqueeze(-1), self.gripper.closing_target(), target[:, fingers])
            finger_speed = (finger_q - previous_q).abs().amax(dim=-1) / dt
            still_steps = torch.where(closing & (finger_speed < 0.005), still_steps + 1, torch.zeros_like(still_steps))
            closed = closing & (
                ((phase_time >= cfg.close_time_min) & (still_steps >= 5)) | (phase_time >= cfg.close_time_max)
            )
            had_object = torch.where(closed, finger_q.sum(dim=-1) > 0.002, had_object)
            lift_z = torch.where(closed, (tcp_z + cfg.lift_height).clamp(max=mount.max_tcp_height), lift_z)

            # LIFT then HOLD.
            lifting = phase == Phase.LIFT
            set_z = torch.where(lifting, self._ramp(set_z, lift_z, cfg.lift_speed), set_z)
            lifted = lifting & ((tcp_z - lift_z).abs() < 0.003)
            held_long_enough = (phase == Phase.HOLD) & (phase_time >= cfg.hold_time)
            # A jaw that has shut holds nothing, and a jaw driven shut does not open again: the attempt is over
            # (judged below as at the end of the hold: EMPTY or SLIP). Saves the lift and hold of the batch
            # when no env holds anything.
            shut = (lifting | (phase == Phase.HOLD)) & (finger_q.sum(dim=-1) <= cfg.shut_opening)

            timed_out = active & (phase_time > cfg.phase_timeout)
            outcome = torch.where(timed_out, torch.full_like(outcome, Outcome.TIMEOUT), outcome)
            finished_hold |= (held_long_enough | shut) & ~timed_out

            # torch.where, not masked assignment: a boolean index costs a host sync on a GPU, every step.
            next_phase = torch.where(to_close, int(Phase.CLOSE), phase)
            next_phase = torch.where(closed, int(Phase.LIFT), next_phase)
            next_phase = torch.where(lifted, int(Phase.HOLD), next_phase)
            next_phase = torch.where(held_long_enough | shut | timed_out, int(Phase.DONE), next_phase)
            phase_time = torch.where(next_phase != phase, torch.zeros_like(phase_time), phase_time + dt)
            elapsed = torch.where(active, elapsed + dt, elapsed)
            phase = next_phase
            previous_q = finger_q.clone()

            set_position = torch.cat((set_position[:, :2], set_z.unsqueeze(-1)), dim=-1)
            arm = mount.track(target[:, :mount.num_arm_joints], set_position, yaw)
            target[:, :mount.num_arm_joints] = torch.where(valid.unsqueeze(-1), arm, target[:, :mount.num_arm_joints])
            self.robot.actuators.target_command.set_position_index(value=target)
            world.step()
            # Envs that are done keep holding until all are.
            if step % self._check_every == 0 and bool((phase == Phase.DONE).all()):
                break

        depth_after_lift = world.render_depth() if render_after_lift else None
        # Judge every finished hold at once; an env that finished early has held its object since.
        grasped = torch.where(finished_hold, self._held_object(object_start, placed), -1)
        success = grasped >= 0
        judged = finished_hold & (outcome < 0)
        outcome = torch.where(judged & success, torch.full_like(outcome, Outcome.SUCCESS), outcome)
        outcome = torch.where(judged & ~success & had_object, torch.full_like(outcome, Outcome.SLIP), outcome)
        outcome = torch.where(judged & ~success & ~had_object, torch.full_like(outcome, Outcome.EMPTY), outcome)
        outcome = torch.where(outcome < 0, torch.full_like(outcome, Outcome.TIMEOUT), outcome)
        grasped = torch.where(outcome == Outcome.SUCCESS, grasped, -1)
        self._teleport(self.home)  # also makes the gripper state finite again where a fault spoiled it
        faulty = self._faults()
        outcome = torch.where(faulty, torch.full_like(outcome, Outcome.FAULT), outcome)
        grasped = torch.where(faulty, -1, grasped)
        self._release(grasped, faulty)
        reached = GraspPoses(position=reached_position, yaw=reached_yaw, width=local.width)
        return AttemptResult(outcome, grasped, local, reached, elapsed, depth_after_lift)

    # ------------------------------------------------------------------ judgement and bookkeeping
    def _held_object(self, object_start: torch.Tensor, placed: torch.Tensor) -> torch.Tensor:
        """(N,) pool slot of the object held between the pads and lifted, or -1. The lowest-index match wins."""
        world = self.world
        pads = self.robot.data.body_pos_w.torch[:, self.robot.find_bodies("finger_.*")[0]] - world.env_origins.unsqueeze(1)
        centre = pads.mean(dim=1)  # (N, 3)
        axis = torch.nn.functional.normalize(pads[:, 0] - pads[:, 1], dim=-1)  # jaw axis in the world
        objects = world.object_positions()  # (N, P, 3)
        rel = objects - centre.unsqueeze(1)
        along = (rel * axis.unsqueeze(1)).sum(-1).abs()
        across = torch.linalg.norm(rel - (rel * axis.unsqueeze(1)).sum(-1, keepdim=True) * axis.unsqueeze(1), dim=-1)
        radius = torch.tensor([item.radius for item in world.pool], device=self.device)
        opening = self.robot.data.joint_pos.torch[:, self.mount.num_arm_joints:].sum(dim=-1, keepdim=True)
        between = (along <= opening / 2 + 0.01) & (across <= radius + self.gripper.pad_size[2])
        risen = objects[..., 2] - object_start[..., 2] >= self.cfg.lift_threshold
        held = between & risen & placed & (opening > 0.001)
        first = torch.where(held, torch.arange(len(world.pool), device=self.device), len(world.pool)).amin(dim=1)
        return torch.where(first < len(world.pool), first, -1)

    def _ramp(self, current: torch.Tensor, goal: torch.Tensor, speed: float) -> torch.Tensor:
        """One step of a set-point moving towards ``goal`` at ``speed``, easing out with ``deceleration``."""
        remaining = goal - current
        step_speed = torch.sqrt(2 * self.cfg.deceleration * remaining.abs()).clamp(max=speed)
        step = (step_speed * self.world.dt).clamp(min=1e-4)
        return current + torch.clamp(remaining, -step, step)

    def _teleport(self, joint_pos: torch.Tensor) -> None:
        ids = torch.arange(self.world.num_envs, device=self.device)
        self.robot.write_joint_state_to_sim_index(position=joint_pos, velocity=torch.zeros_like(joint_pos), env_ids=ids)
        self.robot.actuators.target_command.set_position_index(value=joint_pos)

    def _faults(self) -> torch.Tensor:
        """(N,) bool: envs whose state is non-finite, exploding or has an object out of the bin (counted)."""
        faulty = self.world.faulty_envs(self.cfg.max_speed)
        self.fault_count += int(faulty.sum())
        return faulty

    def _release(self, grasped: torch.Tensor, faulty: torch.Tensor) -> None:
        """Park grasped objects (they leave the bin), count the attempt on the heap, and re-draw faulted,
        empty and spent heaps together: one settle of the world per batch."""
        world = self.world
        success = grasped >= 0
        if bool(success.any()):
            envs = success.nonzero().flatten()
            world.park_objects(envs, grasped[envs])
        self.attempts_on_heap += 1
        empty = ~world.round.placed.any(dim=1)
        redraw = faulty | empty | (self.attempts_on_heap >= self.cfg.attempts_per_heap)
        if bool(redraw.any()):
            # The settle steps the world (the parked objects' state too). The gripper of a faulted env was
            # teleported home; new_round resets it if it is still non-finite.
            envs = redraw.nonzero().flatten()
            info = world.new_round(envs, timeout=world.settings.settle.redraw_timeout)
            self.attempts_on_heap[envs] = 0
            self.redrawn_heaps += len(envs)
            self.redrawn_settled += int(info.settled.sum())
        else:
            world.step()  # the parked objects' state reaches the buffers
