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

__all__ = ["GripperCfg", "JOINT_NAMES", "gantry_articulation_cfg", "write_gantry_usd", "tcp_offset"]

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


def write_gantry_usd(cfg: GripperCfg, folder: str | Path) -> Path:
    """Author the gantry articulation as a USD file in ``folder`` (named by a hash of ``cfg``); returns its path."""
    from pxr import Gf, Sdf, Usd, UsdGeom, UsdPhysics, UsdShade  # noqa: PLC0415

    key = hashlib.sha1(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
    path = Path(folder) / f"gantry_gripper_{key}.usda"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    stage = Usd.Stage.CreateInMemory()
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.z)
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    root = UsdGeom.Xform.Define(stage, "/Gripper").GetPrim()
    stage.SetDefaultPrim(root)
    UsdPhysics.ArticulationRootAPI.Apply(root)

    material = UsdShade.Material.Define(stage, "/Gripper/PadMaterial")
    pad_material = UsdPhysics.MaterialAPI.Apply(material.GetPrim())
    pad_material.CreateStaticFrictionAttr(cfg.pad_friction)
    pad_material.CreateDynamicFrictionAttr(cfg.pad_friction)

    def body(name: str, mass: float, boxes: list[tuple[str, tuple, tuple]] = ()) -> Usd.Prim:
        prim = UsdGeom.Xform.Define(stage, f"/Gripper/{name}").GetPrim()
        UsdPhysics.RigidBodyAPI.Apply(prim)
        mass_api = UsdPhysics.MassAPI.Apply(prim)
        mass_api.CreateMassAttr(mass)
        mass_api.CreateDiagonalInertiaAttr(Gf.Vec3f(1e-3, 1e-3, 1e-3))
        mass_api.CreateCenterOfMassAttr(Gf.Vec3f(0, 0, 0))
        for box_name, size, offset in boxes:
            cube = UsdGeom.Cube.Define(stage, f"/Gripper/{name}/{box_name}")
            cube.CreateSizeAttr(1.0)
            xform = UsdGeom.Xformable(cube)
            xform.AddTranslateOp().Set(Gf.Vec3d(*offset))
            xform.AddScaleOp().Set(Gf.Vec3f(*size))
            UsdPhysics.CollisionAPI.Apply(cube.GetPrim())
            binding = UsdShade.MaterialBindingAPI.Apply(cube.GetPrim())
            binding.Bind(material, UsdShade.Tokens.weakerThanDescendants, "physics")
        return prim

    def joint(kind: str, name: str, parent: str | None, child: str, axis: str, limits, offset=(0, 0, 0), flip=False):
        define = UsdPhysics.PrismaticJoint if kind == "prismatic" else UsdPhysics.RevoluteJoint
        j = define.Define(stage, f"/Gripper/{name}")
        if parent:
            j.CreateBody0Rel().SetTargets([Sdf.Path(f"/Gripper/{parent}")])
        j.CreateBody1Rel().SetTargets([Sdf.Path(f"/Gripper/{child}")])
        j.CreateAxisAttr(axis)
        j.CreateLocalPos0Attr(Gf.Vec3f(*offset))
        j.CreateLocalPos1Attr(Gf.Vec3f(0, 0, 0))
        rotation = Gf.Quatf(0, 0, 0, 1) if flip else Gf.Quatf(1, 0, 0, 0)  # flip: half turn about Z
        j.CreateLocalRot0Attr(rotation)
        j.CreateLocalRot1Attr(rotation)
        j.CreateLowerLimitAttr(limits[0])
        j.CreateUpperLimitAttr(limits[1])
        drive = UsdPhysics.DriveAPI.Apply(j.GetPrim(), "linear" if kind == "prismatic" else "angular")
        drive.CreateTypeAttr("force")
        drive.CreateStiffnessAttr(1.0)
        drive.CreateDampingAttr(0.1)
        drive.CreateTargetPositionAttr(0.0)

    palm_h, pad = cfg.palm_size[2], cfg.pad_size
    half_open = cfg.max_opening / 2
    body("base", 1.0)
    body("x_link", 0.5)
    body("y_link", 0.5)
    body("z_link", 0.5)
    body("palm", 0.3, [("palm_box", cfg.palm_size, (0, 0, -palm_h / 2))])
    # Both finger bodies keep the palm's orientation (the right joint's frames are turned alike on both
    # sides, which only reverses its axis), so each pad sits outward of its joint origin: inner face at +-q.
    pad_z = -palm_h - pad[2] / 2
    body("finger_l", 0.05, [("pad", pad, (0.0, pad[1] / 2, pad_z))])
    body("finger_r", 0.05, [("pad", pad, (0.0, -pad[1] / 2, pad_z))])

    fixed = UsdPhysics.FixedJoint.Define(stage, "/Gripper/fix_base")
    fixed.CreateBody1Rel().SetTargets([Sdf.Path("/Gripper/base")])
    tx, ty, tz = cfg.travel
    joint("prismatic", "joint_x", "base", "x_link", "X", (-tx, tx))
    joint("prismatic", "joint_y", "x_link", "y_link", "Y", (-ty, ty))
    joint("prismatic", "joint_z", "y_link", "z_link", "Z", (-tz, 0.0))
    joint("revolute", "joint_yaw", "z_link", "palm", "Z", (-200.0, 200.0))  # degrees in USD
    joint("prismatic", "finger_l_joint", "palm", "finger_l", "Y", (0.0, half_open))
    joint("prismatic", "finger_r_joint", "palm", "finger_r", "Y", (0.0, half_open), flip=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.tmp.usda")
    stage.GetRootLayer().Export(str(partial))
    partial.replace(path)  # atomic: ranks starting together never read half a file
    return path


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
                effort_limit_sim=cfg.gantry_force,
            ),
            "yaw": ImplicitActuatorCfg(
                joint_names_expr=["joint_yaw"], stiffness=cfg.yaw_stiffness, damping=cfg.yaw_damping, effort_limit_sim=100.0
            ),
            "fingers": ImplicitActuatorCfg(
                joint_names_expr=["finger_.*_joint"],
                stiffness=cfg.finger_stiffness,
                damping=cfg.finger_damping,
                effort_limit_sim=cfg.finger_force,
                armature=cfg.finger_armature,
            ),
        },
    )
