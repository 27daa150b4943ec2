"""The gantry parallel-jaw gripper: YuMi-style fingers (50 mm maximum opening) on a 4-DoF gantry
(x, y, z, yaw) that executes Dex-Net's top-down grasps.

One articulation authored as USD by :func:`write_gantry_usd` (pxr only, nothing downloaded) and loaded by
Newton through :func:`gantry_articulation_cfg`. Joint order: ``joint_x, joint_y, joint_z, joint_yaw,
finger_l_joint, finger_r_joint``. A finger joint value q is the distance of that pad's inner face from the
jaw centre line, so the opening is 2q. The jaw (closing) axis is the palm's local Y axis.

Tool centre point (TCP): on the jaw centre line, ``tcp_above_tips`` above the fingertips; the grasp pose is
where the TCP goes. It sits in the lower part of the pads so that the palm clears the top of an object grasped
at its middle (a palm pressing on the object pushes it out of the pads).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from isaaclab.utils import configclass

__all__ = ["GripperCfg", "JOINT_NAMES", "finger_actuator_cfg", "gantry_articulation_cfg", "write_gantry_usd", "tcp_offset"]

JOINT_NAMES = ("joint_x", "joint_y", "joint_z", "joint_yaw", "finger_l_joint", "finger_r_joint")
"""Joint order of the gantry articulation."""


@configclass
class GripperCfg:
    """Geometry, friction and drives of the gantry gripper. Lengths in metres, forces in newtons."""

    max_opening: float = 0.05  # [m] ABB YuMi fingers as used by Dex-Net
    pad_size: tuple[float, float, float] = (0.02, 0.01, 0.04)  # [m] pad x (along the jaw face), y (thickness), z
    palm_size: tuple[float, float, float] = (0.03, 0.08, 0.02)  # [m]
    pad_friction: float = 1.0
    finger_force: float = 20.0  # [N] per finger (effort limit of its drive): the grip force on any object
    finger_stiffness: float = 500.0  # [N/m]
    finger_damping: float = 20.0
    finger_armature: float = 0.5  # [kg] without it, MuJoCo's mass-scaled soft contacts let light pads sink in
    gantry_stiffness: float = 20000.0  # [N/m]; stiff, so the lift does not sag under the object's weight
    gantry_damping: float = 2000.0
    gantry_force: float = 500.0  # [N]
    yaw_stiffness: float = 200.0  # [N m/rad]
    yaw_damping: float = 20.0
    tcp_above_tips: float = 0.012  # [m]
    base_height: float = 0.45  # [m] gantry base above the table top; the TCP hangs below it
    travel: tuple[float, float, float] = (0.6, 0.5, 0.45)  # [m] joint_x, joint_y: +-; joint_z: [-travel, 0]

    def tcp_below_base(self) -> float:
        """Distance from the z-link origin down to the TCP at joint_z = 0 [m]."""
        return self.palm_size[2] + self.pad_size[2] - self.tcp_above_tips

    def closing_target(self) -> float:
        """Finger set-point while closing [m]: past fully closed, so that the drive saturates and squeezes with
        ``finger_force`` whatever the object's width (a set-point of 0 would grip a 4 mm part with 1 N)."""
        return -self.finger_force / self.finger_stiffness


def tcp_offset(cfg: GripperCfg) -> float:
    """Height of the TCP above the table at joint_z = 0 [m]."""
    return cfg.base_height - cfg.tcp_below_base()


def usd_key(settings: dict) -> str:
    """A short hash of a config's dict, to name generated USD files (a changed config writes a new file)."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


class ArticulationAuthor:
    """Authors rigid bodies (with box colliders) and jointed drives under ``root`` of a USD stage (pxr only).

    Pads get a physics material of ``pad_friction``; joints a force drive whose gains the Isaac Lab actuator cfg
    replaces at load time.
    """

    def __init__(self, stage, root: str, pad_friction: float):
        from pxr import UsdPhysics, UsdShade  # noqa: PLC0415

        self.stage, self.root = stage, root
        self.material = UsdShade.Material.Define(stage, f"{root}/PadMaterial")
        pad_material = UsdPhysics.MaterialAPI.Apply(self.material.GetPrim())
        pad_material.CreateStaticFrictionAttr(pad_friction)
        pad_material.CreateDynamicFrictionAttr(pad_friction)

    def body(self, name: str, mass: float, boxes=(), position=(0.0, 0.0, 0.0), orientation=(1.0, 0.0, 0.0, 0.0)):
        """A rigid body at ``position`` / ``orientation`` (w, x, y, z) in the root frame, with box colliders given
        as (name, size, offset) [m] in its own frame."""
        from pxr import Gf, UsdGeom, UsdPhysics, UsdShade  # noqa: PLC0415

        xform = UsdGeom.Xform.Define(self.stage, f"{self.root}/{name}")
        if any(position) or tuple(orientation) != (1.0, 0.0, 0.0, 0.0):
            xform.AddTranslateOp().Set(Gf.Vec3d(*position))
            xform.AddOrientOp().Set(Gf.Quatf(orientation[0], Gf.Vec3f(*orientation[1:])))
        prim = xform.GetPrim()
        UsdPhysics.RigidBodyAPI.Apply(prim)
        mass_api = UsdPhysics.MassAPI.Apply(prim)
        mass_api.CreateMassAttr(mass)
        mass_api.CreateDiagonalInertiaAttr(Gf.Vec3f(1e-3, 1e-3, 1e-3))
        mass_api.CreateCenterOfMassAttr(Gf.Vec3f(0, 0, 0))
        for box_name, size, offset in boxes:
            cube = UsdGeom.Cube.Define(self.stage, f"{self.root}/{name}/{box_name}")
            cube.CreateSizeAttr(1.0)
            cube_xform = UsdGeom.Xformable(cube)
            cube_xform.AddTranslateOp().Set(Gf.Vec3d(*offset))
            cube_xform.AddScaleOp().Set(Gf.Vec3f(*size))
            UsdPhysics.CollisionAPI.Apply(cube.GetPrim())
            binding = UsdShade.MaterialBindingAPI.Apply(cube.GetPrim())
            binding.Bind(self.material, UsdShade.Tokens.weakerThanDescendants, "physics")
        return prim

    def joint(self, kind: str, name: str, parent: str | None, child: str, axis: str = "Z", limits=(0.0, 0.0),
              offset=(0.0, 0.0, 0.0), rotation=(1.0, 0.0, 0.0, 0.0), child_rotation=None):
        """A ``prismatic``, ``revolute`` (limits in degrees, as USD has them) or ``fixed`` joint from ``parent``
        (the world if None) to ``child``; ``offset`` and ``rotation`` (w, x, y, z) place the joint frame in the
        parent, ``child_rotation`` (default: ``rotation``) in the child."""
        from pxr import Gf, Sdf, UsdPhysics  # noqa: PLC0415

        define = {"prismatic": UsdPhysics.PrismaticJoint, "revolute": UsdPhysics.RevoluteJoint,
                  "fixed": UsdPhysics.FixedJoint}[kind]
        j = define.Define(self.stage, f"{self.root}/{name}")
        if parent:
            j.CreateBody0Rel().SetTargets([Sdf.Path(f"{self.root}/{parent}")])
        j.CreateBody1Rel().SetTargets([Sdf.Path(f"{self.root}/{child}")])
        if kind == "fixed" and parent is None:
            return  # pinned where the body is placed
        child_rotation = rotation if child_rotation is None else child_rotation
        j.CreateLocalPos0Attr(Gf.Vec3f(*offset))
        j.CreateLocalPos1Attr(Gf.Vec3f(0, 0, 0))
        j.CreateLocalRot0Attr(Gf.Quatf(rotation[0], Gf.Vec3f(*rotation[1:])))
        j.CreateLocalRot1Attr(Gf.Quatf(child_rotation[0], Gf.Vec3f(*child_rotation[1:])))
        if kind == "fixed":
            return
        j.CreateAxisAttr(axis)
        j.CreateLowerLimitAttr(limits[0])
        j.CreateUpperLimitAttr(limits[1])
        drive = UsdPhysics.DriveAPI.Apply(j.GetPrim(), "linear" if kind == "prismatic" else "angular")
        drive.CreateTypeAttr("force")
        drive.CreateStiffnessAttr(1.0)
        drive.CreateDampingAttr(0.1)
        drive.CreateTargetPositionAttr(0.0)

    def hand(self, cfg: GripperCfg, position=(0.0, 0.0, 0.0), orientation=(1.0, 0.0, 0.0, 0.0)) -> None:
        """The palm (origin at its top face, fingers hanging along its -Z, jaw axis its Y) and the two pads on
        prismatic joints (``finger_l_joint``, ``finger_r_joint``), the palm placed at ``position`` /
        ``orientation`` in the root frame. The caller attaches the palm to its mount."""
        palm_h, pad = cfg.palm_size[2], cfg.pad_size
        self.body("palm", 0.3, [("palm_box", cfg.palm_size, (0, 0, -palm_h / 2))], position, orientation)
        # Both finger bodies keep the palm's orientation (the right joint's frames are turned alike on both
        # sides, which only reverses its axis), so each pad sits outward of its joint origin: inner face at +-q.
        pad_z = -palm_h - pad[2] / 2
        self.body("finger_l", 0.05, [("pad", pad, (0.0, pad[1] / 2, pad_z))], position, orientation)
        self.body("finger_r", 0.05, [("pad", pad, (0.0, -pad[1] / 2, pad_z))], position, orientation)
        half_open = (0.0, cfg.max_opening / 2)
        self.joint("prismatic", "finger_l_joint", "palm", "finger_l", "Y", half_open)
        half_turn = (0.0, 0.0, 0.0, 1.0)  # about Z
        self.joint("prismatic", "finger_r_joint", "palm", "finger_r", "Y", half_open, rotation=half_turn)


def new_stage(root: str):
    """An in-memory Z-up metre stage whose default prim ``/root`` is an articulation root."""
    from pxr import Usd, UsdGeom, UsdPhysics  # noqa: PLC0415

    stage = Usd.Stage.CreateInMemory()
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.z)
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    prim = UsdGeom.Xform.Define(stage, f"/{root}").GetPrim()
    stage.SetDefaultPrim(prim)
    UsdPhysics.ArticulationRootAPI.Apply(prim)
    return stage


def export_stage(stage, path: Path) -> Path:
    """Write ``stage`` to ``path`` atomically (ranks starting together never read half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.tmp.usda")
    stage.GetRootLayer().Export(str(partial))
    partial.replace(path)
    return path


def write_gantry_usd(cfg: GripperCfg, folder: str | Path) -> Path:
    """Author the gantry articulation as a USD file in ``folder`` (named by a hash of ``cfg``); returns its path."""
    path = Path(folder) / f"gantry_gripper_{usd_key(cfg.to_dict())}.usda"
    if path.exists():
        return path
    stage = new_stage("Gripper")
    author = ArticulationAuthor(stage, "/Gripper", cfg.pad_friction)
    author.body("base", 1.0)
    author.body("x_link", 0.5)
    author.body("y_link", 0.5)
    author.body("z_link", 0.5)
    author.hand(cfg)
    author.joint("fixed", "fix_base", None, "base")
    tx, ty, tz = cfg.travel
    author.joint("prismatic", "joint_x", "base", "x_link", "X", (-tx, tx))
    author.joint("prismatic", "joint_y", "x_link", "y_link", "Y", (-ty, ty))
    author.joint("prismatic", "joint_z", "y_link", "z_link", "Z", (-tz, 0.0))
    author.joint("revolute", "joint_yaw", "z_link", "palm", "Z", (-200.0, 200.0))  # degrees in USD
    return export_stage(stage, path)


def finger_actuator_cfg(cfg: GripperCfg):
    """The two finger joints' drive, on every mount: position targets, ``finger_force`` as the effort limit
    (the grip force), and the armature that keeps MuJoCo's soft contacts from swallowing the light pads."""
    from isaaclab.actuators import ImplicitActuatorCfg  # noqa: PLC0415

    return ImplicitActuatorCfg(
        joint_names_expr=["finger_.*_joint"],
        stiffness=cfg.finger_stiffness,
        damping=cfg.finger_damping,
        joint_effort_limit=cfg.finger_force,
        armature=cfg.finger_armature,
    )


def gantry_articulation_cfg(cfg: GripperCfg, usd_path: str | Path, prim_path: str = "{ENV_REGEX_NS}/Gripper", home=(0.38, 0.0)):
    """The Isaac Lab articulation cfg of the gantry gripper (Newton preset; PhysX reads the same USD).

    ``home`` is the (x, y) [m] where the gripper waits, outside the camera's view of the bin.
    """
    import isaaclab.sim as sim_utils  # noqa: PLC0415
    from isaaclab.actuators import ImplicitActuatorCfg  # noqa: PLC0415
    from isaaclab.assets import ArticulationCfg  # noqa: PLC0415

    return ArticulationCfg(
        prim_path=prim_path,
        spawn=sim_utils.UsdFileCfg(usd_path=str(usd_path)),
        init_state=ArticulationCfg.InitialStateCfg(
            pos=(0.0, 0.0, cfg.base_height),
            joint_pos={"joint_x": home[0], "joint_y": home[1], "joint_z": 0.0, "joint_yaw": 0.0,
                       "finger_.*_joint": cfg.max_opening / 2},
        ),
        actuators={
            "gantry": ImplicitActuatorCfg(
                joint_names_expr=["joint_[xyz]"],
                stiffness=cfg.gantry_stiffness,
                damping=cfg.gantry_damping,
                joint_effort_limit=cfg.gantry_force,
            ),
            "yaw": ImplicitActuatorCfg(
                joint_names_expr=["joint_yaw"],
                stiffness=cfg.yaw_stiffness,
                damping=cfg.yaw_damping,
                joint_effort_limit=100.0,
            ),
            "fingers": finger_actuator_cfg(cfg),
        },
    )
