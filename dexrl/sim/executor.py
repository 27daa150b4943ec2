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
While attempts stream (:meth:`GraspExecutor.streaming`), a re-drawn heap instead comes to rest while the other
envs' attempts go on (:meth:`BinWorld.begin_round`); its env starts no attempt until it has. A heap that is
not re-drawn is waited for too (:meth:`BinWorld.begin_rest`): an object that slipped from the fingers falls
back, and objects the fingers pushed roll on, so the next attempt is planned on a heap at rest.
"""

from __future__ import annotations

import contextlib
import enum
import math
from collections.abc import Iterator
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


@dataclass
class _AttemptState:
    """Per env state of the attempts, (N, ...) tensors; rows of envs with no attempt running are DONE."""

    commanded: GraspPoses  # env-local TCP goal poses
    valid: torch.Tensor  # (N,) bool: the pose is reachable (otherwise the env waits at home)
    yaw: torch.Tensor  # (N,) palm yaw [rad]
    set_position: torch.Tensor  # (N, 3) TCP set-point [m]
    target: torch.Tensor  # (N, J) joint drive targets
    phase: torch.Tensor  # (N,) long, Phase values
    phase_time: torch.Tensor  # (N,) [s]
    elapsed: torch.Tensor  # (N,) [s]
    lift_z: torch.Tensor  # (N,) [m]
    had_object: torch.Tensor  # (N,) bool: something was between the fingers when they closed
    still_steps: torch.Tensor  # (N,) long: steps the closing fingers have stood still
    previous_q: torch.Tensor  # (N, 2) finger joints at the last step [m]
    finished_hold: torch.Tensor  # (N,) bool
    reached_position: torch.Tensor  # (N, 3) [m]
    reached_yaw: torch.Tensor  # (N,) [rad]
    object_start: torch.Tensor  # (N, P, 3) env-local object positions when the attempt began [m]
    placed: torch.Tensor  # (N, P) bool: the heap's objects when the attempt began
    outcome: torch.Tensor  # (N,) long: an Outcome once decided, -1 before
    in_flight: torch.Tensor  # (N,) bool: started and not yet concluded
    fresh: torch.Tensor  # (N,) bool: started since the last physics step

    @classmethod
    def idle(cls, num_envs: int, num_objects: int, home: torch.Tensor, num_arm_joints: int) -> _AttemptState:
        """No attempt in any env; the fingers' targets at ``home`` (N, J)."""

        def zeros(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.zeros(num_envs, *shape, dtype=dtype, device=home.device)

        return cls(
            commanded=GraspPoses(zeros(3), zeros(), zeros()),
            valid=zeros(dtype=torch.bool),
            yaw=zeros(),
            set_position=zeros(3),
            target=home.clone(),
            phase=torch.full((num_envs,), int(Phase.DONE), device=home.device),
            phase_time=zeros(),
            elapsed=zeros(),
            lift_z=zeros(),
            had_object=zeros(dtype=torch.bool),
            still_steps=zeros(dtype=torch.long),
            previous_q=zeros(home.shape[1] - num_arm_joints),
            finished_hold=zeros(dtype=torch.bool),
            reached_position=zeros(3),
            reached_yaw=zeros(),
            object_start=zeros(num_objects, 3),
            placed=zeros(num_objects, dtype=torch.bool),
            outcome=torch.full((num_envs,), -1, device=home.device),
            in_flight=zeros(dtype=torch.bool),
            fresh=zeros(dtype=torch.bool),
        )

    def begin(self, ids, local: GraspPoses, valid, yaw, set_position) -> None:
        """Reset the rows of ``ids`` for a new attempt towards the env-local poses ``local`` (the drive targets
        are set by the teleport that places the fingers)."""
        for name, value in (("position", local.position), ("yaw", local.yaw), ("width", local.width)):
            getattr(self.commanded, name)[ids] = value
        self.valid[ids], self.yaw[ids], self.set_position[ids] = valid, yaw, set_position
        self.phase[ids] = torch.where(valid, int(Phase.DESCEND), int(Phase.DONE))
        self.outcome[ids] = torch.where(valid, -1, int(Outcome.INVALID))
        for tensor in (self.phase_time, self.elapsed, self.lift_z, self.reached_yaw, self.reached_position):
            tensor[ids] = 0.0
        self.still_steps[ids] = 0
        self.had_object[ids] = self.finished_hold[ids] = False
        self.in_flight[ids] = self.fresh[ids] = True

    def end(self, ids) -> None:
        """The attempts of ``ids`` are concluded (their fingers were sent home)."""
        self.in_flight[ids] = self.valid[ids] = False
        self.phase[ids] = int(Phase.DONE)


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
        self._streaming = False
        self._coming_to_rest = torch.zeros(world.num_envs, dtype=torch.bool, device=self.device)  # re-drawn here
        # The end-of-attempt check costs a host sync on a GPU: there only every few steps.
        self.check_every = 1 if self.device.type == "cpu" else 10
        self._state = _AttemptState.idle(world.num_envs, len(world.pool), self.home, self.mount.num_arm_joints)
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
        """Run one attempt per env to the world-frame TCP ``poses`` (N grasps), all envs in lock-step, and judge
        them. An env that finishes early holds its state until all are done.

        ``render_after_lift`` also renders the depth images at the end of the hold (gripper in view)."""
        world, state = self.world, self._state
        self.start(poses)
        world.step()  # refresh the contact buffers, which still hold the last step before the teleport
        state.fresh[:] = False
        state.previous_q = self.robot.data.joint_pos.torch[:, self.mount.num_arm_joints:].clone()
        for step in range(1, round(5 * self.cfg.phase_timeout / world.dt) + 1):
            self._control()
            world.step()
            if step % self.check_every == 0 and bool((state.phase == Phase.DONE).all()):
                break
        depth_after_lift = world.render_depth() if render_after_lift else None
        result = self.conclude(torch.arange(world.num_envs, device=self.device))
        result.depth_after_lift = depth_after_lift
        world.rest_all()  # the next batch is planned on heaps at rest
        return result

    def start(self, poses: GraspPoses, env_ids: torch.Tensor | None = None) -> None:
        """Begin one attempt in each of ``env_ids`` (all envs by default) towards its world-frame TCP pose in
        ``poses`` (one per listed env): the fingers are placed open above the grasp, the next physics steps
        run the attempt (:meth:`execute` steps them; in :meth:`streaming`, any :meth:`BinWorld.step` does)."""
        world, cfg, state, dev = self.world, self.cfg, self._state, self.device
        ids = torch.arange(world.num_envs, device=dev) if env_ids is None else env_ids.to(dev)
        local = GraspPoses(
            position=poses.position.to(dev) - world.env_origins[ids], yaw=poses.yaw.to(dev), width=poses.width.to(dev)
        )
        yaw = self._palm_yaw(local.yaw)
        mount, fingers = self.mount, slice(self.mount.num_arm_joints, None)
        wall_top = float(world.interior_bounds[5])
        goal_z = local.position[:, 2]
        start_z = torch.maximum(goal_z + cfg.approach_distance, torch.full_like(goal_z, wall_top + 0.03))
        start_z = start_z.clamp(max=mount.max_tcp_height)
        start = torch.cat((local.position[:, :2], start_z.unsqueeze(-1)), dim=-1)
        valid = self.reachable(local) & self.reachable(GraspPoses(start, local.yaw, local.width))

        # Invalid envs wait at home; the others start above their grasp with the fingers open.
        home = self.home[ids]
        target = home.clone()
        arm = mount.solve(torch.where(valid.unsqueeze(-1), start, torch.zeros_like(start)), torch.where(valid, yaw, 0.0))
        target[:, : mount.num_arm_joints] = torch.where(valid.unsqueeze(-1), arm, home[:, : mount.num_arm_joints])
        target[:, fingers] = self.gripper.max_opening / 2
        self._teleport(target, ids)
        state.begin(ids, local, valid, yaw, torch.where(valid.unsqueeze(-1), start, mount.tcp_pose(home)[0]))
        state.object_start[ids] = world.object_positions()[ids]
        state.placed[ids] = world.round.placed[ids]
        state.previous_q[ids] = self.robot.data.joint_pos.torch[ids, fingers]

    def _control(self) -> None:
        """One step of the attempts' state machine for all envs: read the joints and contact forces, move the
        phases on, and set the drive targets for the next physics step."""
        cfg, dt, s = self.cfg, self.world.dt, self._state
        mount, fingers = self.mount, slice(self.mount.num_arm_joints, None)
        active = s.phase < Phase.DONE
        q = self.robot.data.joint_pos.torch
        tcp, tcp_yaw = mount.tcp_pose(q)
        tcp_z, finger_q = tcp[:, 2], q[:, fingers]
        force = torch.linalg.norm(self.contacts.data.net_forces_w.torch, dim=-1).amax(dim=-1)
        goal, goal_z = s.commanded.position, s.commanded.position[:, 2]

        # DESCEND: ramp the TCP set-point down; stop on contact, far above the goal means a collision. Envs
        # started since the last physics step skip the contact check: their buffers predate the teleport.
        descending = s.phase == Phase.DESCEND
        set_z = torch.where(descending, self._ramp(s.set_position[:, 2], goal_z, cfg.descend_speed), s.set_position[:, 2])
        hit = descending & (force > cfg.contact_force) & ~s.fresh
        collided = hit & (tcp_z - goal_z > cfg.collision_margin)
        arrived = descending & (torch.linalg.norm(tcp - goal, dim=-1) < mount.tracking_tolerance)
        to_close = descending & ~collided & (hit | arrived)
        s.reached_position = torch.where(to_close.unsqueeze(-1), tcp, s.reached_position)
        s.reached_yaw = torch.where(to_close, wrap_half_turn(tcp_yaw + math.pi / 2), s.reached_yaw)
        set_z = torch.where(to_close, tcp_z, set_z)  # hold where the descent stopped
        s.outcome = torch.where(collided, torch.full_like(s.outcome, Outcome.COLLISION), s.outcome)
        phase = torch.where(collided, torch.full_like(s.phase, Phase.DONE), s.phase)

        # CLOSE: drive both fingers shut; done when they stall (after a minimum time) or at the maximum.
        closing = phase == Phase.CLOSE
        s.target[:, fingers] = torch.where(closing.unsqueeze(-1), self.gripper.closing_target(), s.target[:, fingers])
        finger_speed = (finger_q - s.previous_q).abs().amax(dim=-1) / dt
        s.still_steps = torch.where(closing & (finger_speed < 0.005), s.still_steps + 1, torch.zeros_like(s.still_steps))
        closed = closing & (
            ((s.phase_time >= cfg.close_time_min) & (s.still_steps >= 5)) | (s.phase_time >= cfg.close_time_max)
        )
        s.had_object = torch.where(closed, finger_q.sum(dim=-1) > 0.002, s.had_object)
        s.lift_z = torch.where(closed, (tcp_z + cfg.lift_height).clamp(max=mount.max_tcp_height), s.lift_z)

        # LIFT then HOLD.
        lifting = phase == Phase.LIFT
        set_z = torch.where(lifting, self._ramp(set_z, s.lift_z, cfg.lift_speed), set_z)
        lifted = lifting & ((tcp_z - s.lift_z).abs() < 0.003)
        held_long_enough = (phase == Phase.HOLD) & (s.phase_time >= cfg.hold_time)
        # A jaw that has shut holds nothing, and a jaw driven shut does not open again: the attempt is over
        # (judged as at the end of the hold: EMPTY or SLIP). Saves the lift and hold when nothing is held.
        shut = (lifting | (phase == Phase.HOLD)) & (finger_q.sum(dim=-1) <= cfg.shut_opening)

        timed_out = active & (s.phase_time > cfg.phase_timeout)
        s.outcome = torch.where(timed_out, torch.full_like(s.outcome, Outcome.TIMEOUT), s.outcome)
        s.finished_hold |= (held_long_enough | shut) & ~timed_out

        # torch.where, not masked assignment: a boolean index costs a host sync on a GPU, every step.
        next_phase = torch.where(to_close, int(Phase.CLOSE), phase)
        next_phase = torch.where(closed, int(Phase.LIFT), next_phase)
        next_phase = torch.where(lifted, int(Phase.HOLD), next_phase)
        next_phase = torch.where(held_long_enough | shut | timed_out, int(Phase.DONE), next_phase)
        s.phase_time = torch.where(next_phase != s.phase, torch.zeros_like(s.phase_time), s.phase_time + dt)
        s.elapsed = torch.where(active, s.elapsed + dt, s.elapsed)
        s.phase = next_phase
        s.previous_q = finger_q.clone()
        s.fresh[:] = False

        s.set_position = torch.cat((s.set_position[:, :2], set_z.unsqueeze(-1)), dim=-1)
        arm = mount.track(s.target[:, : mount.num_arm_joints], s.set_position, s.yaw)
        s.target[:, : mount.num_arm_joints] = torch.where(s.valid.unsqueeze(-1), arm, s.target[:, : mount.num_arm_joints])
        self.robot.actuators.target_command.set_position_index(value=s.target)

    def finished(self) -> torch.Tensor:
        """(N,) bool: envs whose attempt is over and not yet concluded (one host sync on a GPU)."""
        return ((self._state.phase == Phase.DONE) & self._state.in_flight).cpu()

    @contextlib.contextmanager
    def streaming(self) -> Iterator[None]:
        """Within the block, every physics step of the world first runs the attempts' state machine: envs whose
        attempt was :meth:`start`-ed run on while others are concluded, re-drawn and re-planned. Heaps of
        concluded attempts come to rest while the world steps on (re-drawn ones through
        :meth:`BinWorld.begin_round`, the others through :meth:`BinWorld.begin_rest`): whoever streams calls
        :meth:`heaps_rested` with :meth:`BinWorld.rested_rounds` after its steps, and starts no attempt in an env
        whose heap is still :meth:`BinWorld.coming_to_rest`. At the end of the block the world steps on until
        every such heap is at rest (not when the block ends with an exception)."""
        self.world.pre_step_callbacks.append(self._control)
        self._streaming = True
        try:
            yield
            self.heaps_rested(self.world.rest_all())
        finally:
            self._streaming = False
            self.world.pre_step_callbacks.remove(self._control)

    def heaps_rested(self, env_ids: torch.Tensor) -> None:
        """Count the heaps among ``env_ids`` (envs whose heaps came to rest, from
        :meth:`BinWorld.rested_rounds`) that :meth:`conclude` re-drew, in ``redrawn_settled`` if they are at rest
        rather than timed out."""
        if not len(env_ids):  # the usual case: no boolean index, no host sync on a GPU
            return
        ids = env_ids.to(self.device)
        mine = ids[self._coming_to_rest[ids]]
        if len(mine):
            self._coming_to_rest[mine] = False
            self.redrawn_settled += int(self.world.round.settled[mine].sum())

    def conclude(self, env_ids: torch.Tensor) -> AttemptResult:
        """Judge the finished attempts of ``env_ids``, send their fingers home, park what they grasped, count
        faults, and re-draw the faulted, empty and spent heaps among them. Results are in ``env_ids`` order."""
        s, ids = self._state, env_ids.to(self.device)
        # Judge every finished hold at once; an env that finished early has held its object since.
        finished_hold = s.finished_hold[ids]
        grasped = torch.where(finished_hold, self._held_object(s.object_start, s.placed)[ids], -1)
        success = grasped >= 0
        outcome = s.outcome[ids]
        judged = finished_hold & (outcome < 0)
        outcome = torch.where(judged & success, torch.full_like(outcome, Outcome.SUCCESS), outcome)
        outcome = torch.where(judged & ~success & s.had_object[ids], torch.full_like(outcome, Outcome.SLIP), outcome)
        outcome = torch.where(judged & ~success & ~s.had_object[ids], torch.full_like(outcome, Outcome.EMPTY), outcome)
        outcome = torch.where(outcome < 0, torch.full_like(outcome, Outcome.TIMEOUT), outcome)
        grasped = torch.where(outcome == Outcome.SUCCESS, grasped, -1)
        self._teleport(self.home[ids], ids)  # also makes the gripper state finite again where a fault spoiled it
        s.end(ids)
        faulty = self._faults(ids)
        outcome = torch.where(faulty, torch.full_like(outcome, Outcome.FAULT), outcome)
        grasped = torch.where(faulty, -1, grasped)
        commanded = GraspPoses(s.commanded.position[ids], s.commanded.yaw[ids], s.commanded.width[ids])
        reached = GraspPoses(s.reached_position[ids], s.reached_yaw[ids], s.commanded.width[ids])
        result = AttemptResult(outcome, grasped, commanded, reached, s.elapsed[ids].clone())
        self._release(ids, grasped, faulty)
        return result

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

    def _teleport(self, joint_pos: torch.Tensor, env_ids: torch.Tensor | None = None) -> None:
        """Put the joints of ``env_ids`` (all envs by default) at ``joint_pos`` (one row per listed env), at
        rest, with their drive targets there too. The write covers all envs, the others keeping their state
        (as :meth:`BinWorld._write_object_poses` does, for the same reason)."""
        data = self.robot.data
        position, velocity = data.joint_pos.torch.clone(), data.joint_vel.torch.clone()
        ids = slice(None) if env_ids is None else env_ids
        position[ids], velocity[ids] = joint_pos, 0.0
        self._state.target[ids] = joint_pos
        all_envs = torch.arange(self.world.num_envs, device=self.device)
        self.robot.write_joint_state_to_sim_index(position=position, velocity=velocity, env_ids=all_envs)
        self.robot.actuators.target_command.set_position_index(value=self._state.target)

    def _faults(self, env_ids: torch.Tensor) -> torch.Tensor:
        """(len(env_ids),) bool: which of the envs have a non-finite or exploding state or an object out of the
        bin (counted in ``fault_count``)."""
        faulty = self.world.faulty_envs(self.cfg.max_speed)[env_ids]
        self.fault_count += int(faulty.sum())
        return faulty

    def _release(self, env_ids: torch.Tensor, grasped: torch.Tensor, faulty: torch.Tensor) -> None:
        """Park the objects grasped in ``env_ids`` (they leave the bin), count the attempt on each heap, and
        re-draw the faulted, empty and spent heaps among them together: one settle of the world, or, while
        streaming, heaps that come to rest as the world steps on. The other heaps are waited for as well
        (:meth:`BinWorld.begin_rest`)."""
        world = self.world
        success = grasped >= 0
        if bool(success.any()):
            world.park_objects(env_ids[success], grasped[success])
        self.attempts_on_heap[env_ids] += 1
        empty = ~world.round.placed[env_ids].any(dim=1)
        redraw = faulty | empty | (self.attempts_on_heap[env_ids] >= self.cfg.attempts_per_heap)
        world.begin_rest(env_ids[~redraw])  # a slipped object falls back, pushed ones roll on
        if bool(redraw.any()):
            # The gripper of a faulted env was teleported home; the re-draw resets it if it is still non-finite.
            envs = env_ids[redraw]
            self.attempts_on_heap[envs] = 0
            self.redrawn_heaps += len(envs)
            if self._streaming:  # they come to rest while the other envs' attempts go on
                world.begin_round(envs)
                self._coming_to_rest[envs] = True
            else:  # one settle for all of them, stepping the whole world
                info = world.new_round(envs, timeout=world.settings.settle.redraw_timeout)
                self.redrawn_settled += int(info.settled.sum())
