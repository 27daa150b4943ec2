"""The Franka Panda embodiment: the Panda arm (``assets/franka/panda_arm.usda``, generated from the MJCF that
``gymnasium-robotics`` ships by ``scripts/make_franka_asset.py``) with the gantry's YuMi-style fingers on its
flange in place of the Panda hand.

One articulation authored by :func:`write_franka_usd`; joint order ``panda_joint1..7, finger_l_joint,
finger_r_joint``. The arm's links are gravity-compensated (``mjc:gravcomp``, like the real arm's controller),
so its stiff joint drives track the batched differential IK of :class:`dexrl.sim.mounts.FrankaMount`.
The palm, pads and TCP are exactly the gantry's (:class:`~dexrl.sim.gripper.GripperCfg`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from isaaclab.utils import configclass

from .gripper import ArticulationAuthor, GripperCfg, export_stage, finger_actuator_cfg, usd_key
from .kinematics import SerialChain, quat_of, transform

__all__ = ["ARM_JOINTS", "ARM_USD", "FrankaCfg", "franka_articulation_cfg", "franka_chain", "write_franka_usd"]

ARM_USD = Path(__file__).resolve().parents[2] / "assets" / "franka" / "panda_arm.usda"
"""The Panda arm without its hand (links 0-7), committed with its licence beside it."""

ARM_JOINTS = tuple(f"panda_joint{i}" for i in range(1, 8))
HAND_BODIES = ("palm", "finger_l", "finger_r")
CONTACT_BODIES = "(palm|finger_l|finger_r|link[5-7])"
"""Bodies whose contacts stop a descent: the fingers and the wrist (it is wider than the palm)."""
_LAYOUT = 2
"""Bump when :func:`write_franka_usd` authors something new, so that cached files are rewritten."""
FLANGE_OFFSET = 0.107
"""[m] the flange along link 7's Z axis (where the Panda hand sat)."""


@configclass
class FrankaCfg:
    """Placement, home pose, drives and IK of the Franka arm. Lengths in metres, angles in radians."""

    base_position: tuple[float, float, float] = (-0.52, 0.0, 0.0)  # env-local; the bin is centred at the origin
    home: tuple[float, ...] = (0.0, -1.5, 0.0, -2.9, 0.0, 1.5, 0.0)  # folded back over the base, out of the camera's view
    ik_seed: tuple[float, ...] = (0.0, 0.3, 0.0, -1.8, 0.0, 0.5, 0.0)  # hand down above the bin: where solves start
    max_tcp_height: float = 0.40  # [m] env-local; lifts stop here (as the gantry's top)
    stiffness: float = 2000.0  # [N m/rad]
    damping: float = 80.0  # [N m s/rad]
    armature: float = 0.1  # [kg m^2] reflected motor inertia; keeps the stiff drives stable at dt = 1/120 s
    shoulder_effort: float = 87.0  # [N m] joints 1-4 (the Panda's limits)
    wrist_effort: float = 12.0  # [N m] joints 5-7
    ik_damping: float = 0.02  # DLS damping (lambda)
    ik_iterations: int = 60  # for a pose from scratch (pre-grasp); tracking takes one step per physics step
    ik_rest_gain: float = 0.1  # pull of the redundant joint towards ``home`` in the null space
    position_tolerance: float = 0.002  # [m] an IK solution further than this from its target is unreachable
    arrival_tolerance: float = 0.001  # [m] the descent has arrived when the measured TCP is this close
    angle_tolerance: float = 0.035  # [rad] (2 degrees)


def _flange_mount() -> tuple[tuple[float, float, float], tuple[float, float, float, float]]:
    """The palm's frame in link 7's: at the flange, turned half a turn about X so that the palm's Z (up, away
    from the fingers) points back along the arm, as on the gantry."""
    return (0.0, 0.0, FLANGE_OFFSET), (0.0, 1.0, 0.0, 0.0)


def write_franka_usd(gripper: GripperCfg, folder: str | Path) -> Path:
    """Author the arm with the fingers on its flange as one USD file in ``folder`` (named by a hash of the gripper
    cfg and the arm file); returns its path."""
    from pxr import Sdf, Usd  # noqa: PLC0415

    arm_text = ARM_USD.read_text()
    key = usd_key({"gripper": gripper.to_dict(), "arm": arm_text, "layout": _LAYOUT})
    path = Path(folder) / f"franka_{key}.usda"
    if path.exists():
        return path
    layer = Sdf.Layer.CreateAnonymous(".usda")
    layer.ImportFromString(arm_text)
    stage = Usd.Stage.Open(layer)
    author = ArticulationAuthor(stage, "/Franka", gripper.pad_friction)
    # The hand's bodies are placed where the arm at q = 0 holds them (the importer may read either).
    link7 = SerialChain.from_usd(stage, list(ARM_JOINTS)).forward(torch.zeros(1, 7, dtype=torch.float64))[1][0]
    offset, rotation = _flange_mount()
    palm = link7 @ transform(offset, rotation)
    author.hand(gripper, position=tuple(palm[:3, 3].tolist()), orientation=quat_of(palm[:3, :3]))
    for body in HAND_BODIES:  # the controller carries the hand's weight too, as it does the arm's
        prim = stage.GetPrimAtPath(f"/Franka/{body}")
        prim.CreateAttribute("mjc:gravcomp", Sdf.ValueTypeNames.Float).Set(1.0)
        prim.CreateAttribute("physxRigidBody:disableGravity", Sdf.ValueTypeNames.Bool).Set(True)
    author.joint("fixed", "hand_joint", "link7", "palm", offset=offset, rotation=rotation, child_rotation=(1.0, 0.0, 0.0, 0.0))
    return export_stage(stage, path)


def franka_chain(gripper: GripperCfg, usd_path: str | Path) -> SerialChain:
    """The arm's kinematic chain from its base to the TCP (float64, CPU), read from the authored USD."""
    return SerialChain.from_usd(usd_path, list(ARM_JOINTS), "hand_joint", (0.0, 0.0, -gripper.tcp_below_base()))


def franka_articulation_cfg(gripper: GripperCfg, franka: FrankaCfg, usd_path: str | Path, prim_path: str = "{ENV_REGEX_NS}/Gripper"):
    """The Isaac Lab articulation cfg of the Franka embodiment (Newton preset; PhysX reads the same USD).

    The arm's base sits at ``franka.base_position`` and starts at ``franka.home``; the fingers' drives are the
    gantry's (same force, stiffness and armature)."""
    import isaaclab.sim as sim_utils  # noqa: PLC0415
    from isaaclab.actuators import ImplicitActuatorCfg  # noqa: PLC0415
    from isaaclab.assets import ArticulationCfg  # noqa: PLC0415

    return ArticulationCfg(
        prim_path=prim_path,
        spawn=sim_utils.UsdFileCfg(usd_path=str(usd_path)),
        init_state=ArticulationCfg.InitialStateCfg(
            pos=franka.base_position,
            joint_pos={**dict(zip(ARM_JOINTS, franka.home)), "finger_.*_joint": gripper.max_opening / 2},
        ),
        actuators={
            "arm": ImplicitActuatorCfg(
                joint_names_expr=["panda_joint[1-7]"],
                stiffness=franka.stiffness,
                damping=franka.damping,
                joint_effort_limit={
                    "panda_joint[1-4]": franka.shoulder_effort,
                    "panda_joint[5-7]": franka.wrist_effort,
                },
                armature=franka.armature,
            ),
            "fingers": finger_actuator_cfg(gripper),
        },
    )
