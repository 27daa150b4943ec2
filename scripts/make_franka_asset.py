"""Regenerate ``assets/franka/panda_arm.usda``: the Franka Panda arm (links 0-7, no hand) as a USD articulation.

Source: the Panda MJCF that the ``gymnasium-robotics`` package ships (Franka Kitchen assets, MIT; originally
Vikash Kumar's Apache-2.0 model). MuJoCo compiles it, so the link frames, joint axes and limits, the masses and
the inertias (MuJoCo derives them from the collision meshes and the link masses) are MuJoCo's own numbers; the
collision meshes are written as convex hulls. The YuMi-style fingers are not part of this file: DexRL authors them
on the flange at run time (:func:`dexrl.sim.franka.write_franka_usd`).

Usage (nothing of it is needed at run time)::

    pip install --no-deps --target /tmp/gymrob gymnasium-robotics==1.4.2
    PYTHONPATH=/tmp/gymrob python scripts/make_franka_asset.py

Every arm link gets ``mjc:gravcomp = 1`` (Newton's MuJoCo solver) and ``physxRigidBody:disableGravity`` (PhysX): the
arm is gravity-compensated like the real Panda's controller, so its stiff joint drives track without sag.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import shutil
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "assets" / "franka"
LINKS = [f"panda0_link{i}" for i in range(8)]

_MODEL = """<mujoco model="panda_arm">
  <include file="assets.xml"/>
  <worldbody><include file="chain.xml"/></worldbody>
</mujoco>
"""


def gymnasium_robotics_dir() -> Path:
    """The installed package's folder (found, not imported: importing it needs its optional dependencies)."""
    spec = importlib.util.find_spec("gymnasium_robotics")
    if spec is None or spec.origin is None:
        raise SystemExit("gymnasium-robotics is not installed: see the usage in this script's docstring")
    return Path(spec.origin).parent


def compile_model(source: Path):
    """The MJCF compiled by MuJoCo (the include paths are relative to the kitchen folder)."""
    import mujoco  # noqa: PLC0415

    model_file = source.parent / "_dexrl_panda_arm.xml"
    model_file.write_text(_MODEL.replace('file="', 'file="franka_assets/'))
    try:
        return mujoco.MjModel.from_xml_path(str(model_file))
    finally:
        model_file.unlink()


def write_usd(model, path: Path) -> None:
    import mujoco  # noqa: PLC0415
    from pxr import Gf, Sdf, Usd, UsdGeom, UsdPhysics  # noqa: PLC0415

    stage = Usd.Stage.CreateInMemory()
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.z)
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    root = UsdGeom.Xform.Define(stage, "/Franka").GetPrim()
    stage.SetDefaultPrim(root)
    UsdPhysics.ArticulationRootAPI.Apply(root)
    root.CreateAttribute("physxArticulation:enabledSelfCollisions", Sdf.ValueTypeNames.Bool).Set(False)

    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)  # q = 0: every link's pose in the arm's base frame

    def quat(wxyz) -> Gf.Quatf:
        return Gf.Quatf(float(wxyz[0]), Gf.Vec3f(*map(float, wxyz[1:])))

    for index, name in enumerate(LINKS):
        body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
        link = f"/Franka/link{index}"
        xform = UsdGeom.Xform.Define(stage, link)
        xform.AddTranslateOp().Set(Gf.Vec3d(*map(float, data.xpos[body])))
        xform.AddOrientOp().Set(quat(data.xquat[body]))
        prim = xform.GetPrim()
        UsdPhysics.RigidBodyAPI.Apply(prim)
        mass = UsdPhysics.MassAPI.Apply(prim)
        mass.CreateMassAttr(float(model.body_mass[body]))  # link 7's includes the Panda hand's 0.82 kg
        mass.CreateCenterOfMassAttr(Gf.Vec3f(*map(float, model.body_ipos[body])))
        mass.CreateDiagonalInertiaAttr(Gf.Vec3f(*map(float, model.body_inertia[body])))
        mass.CreatePrincipalAxesAttr(quat(model.body_iquat[body]))
        prim.CreateAttribute("mjc:gravcomp", Sdf.ValueTypeNames.Float).Set(1.0)
        prim.CreateAttribute("physxRigidBody:disableGravity", Sdf.ValueTypeNames.Bool).Set(True)
        for geom in range(model.ngeom):
            if model.geom_bodyid[geom] != body or model.geom_contype[geom] == 0:
                continue  # visual-only geoms
            mesh_id = model.geom_dataid[geom]
            if mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_MESH, mesh_id) == "hand_col":
                continue  # the Panda hand is replaced by DexRL's fingers
            start, count = model.mesh_vertadr[mesh_id], model.mesh_vertnum[mesh_id]
            face_start, face_count = model.mesh_faceadr[mesh_id], model.mesh_facenum[mesh_id]
            mesh = UsdGeom.Mesh.Define(stage, f"{link}/collision")
            mesh.AddTranslateOp().Set(Gf.Vec3d(*map(float, model.geom_pos[geom])))
            mesh.AddOrientOp().Set(quat(model.geom_quat[geom]))
            mesh.CreatePointsAttr([Gf.Vec3f(*map(float, v)) for v in model.mesh_vert[start : start + count]])
            faces = model.mesh_face[face_start : face_start + face_count]
            mesh.CreateFaceVertexCountsAttr([3] * len(faces))
            mesh.CreateFaceVertexIndicesAttr([int(i) for i in faces.flatten()])
            UsdPhysics.CollisionAPI.Apply(mesh.GetPrim())
            UsdPhysics.MeshCollisionAPI.Apply(mesh.GetPrim()).CreateApproximationAttr("convexHull")

    fixed = UsdPhysics.FixedJoint.Define(stage, "/Franka/fix_base")
    fixed.CreateBody1Rel().SetTargets([Sdf.Path("/Franka/link0")])
    for index in range(1, 8):
        body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, LINKS[index])
        joint_id = model.body_jntadr[body]
        if model.jnt_type[joint_id] != mujoco.mjtJoint.mjJNT_HINGE or not np.allclose(model.jnt_axis[joint_id], (0, 0, 1)):
            raise RuntimeError(f"{LINKS[index]}: expected a hinge about the link's z axis")
        joint = UsdPhysics.RevoluteJoint.Define(stage, f"/Franka/panda_joint{index}")
        joint.CreateBody0Rel().SetTargets([Sdf.Path(f"/Franka/link{index - 1}")])
        joint.CreateBody1Rel().SetTargets([Sdf.Path(f"/Franka/link{index}")])
        joint.CreateAxisAttr("Z")
        joint.CreateLocalPos0Attr(Gf.Vec3f(*map(float, model.body_pos[body])))
        joint.CreateLocalRot0Attr(quat(model.body_quat[body]))
        joint.CreateLocalPos1Attr(Gf.Vec3f(0, 0, 0))
        joint.CreateLocalRot1Attr(Gf.Quatf(1, 0, 0, 0))
        low, high = (math.degrees(float(v)) for v in model.jnt_range[joint_id])
        joint.CreateLowerLimitAttr(low)
        joint.CreateUpperLimitAttr(high)
        drive = UsdPhysics.DriveAPI.Apply(joint.GetPrim(), "angular")
        drive.CreateTypeAttr("force")
        drive.CreateStiffnessAttr(1.0)
        drive.CreateDampingAttr(0.1)
        drive.CreateTargetPositionAttr(0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    stage.GetRootLayer().Export(str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=None, help="the franka_assets folder (default: the installed package's)")
    args = parser.parse_args()
    package = gymnasium_robotics_dir()
    source = args.source or package / "envs" / "assets" / "kitchen_franka" / "franka_assets"
    write_usd(compile_model(source), OUT / "panda_arm.usda")
    for licence in package.parent.glob("gymnasium_robotics-*.dist-info/licenses/LICENSE"):
        shutil.copyfile(licence, OUT / "LICENSE.gymnasium-robotics")
    print(f"wrote {OUT / 'panda_arm.usda'}")


if __name__ == "__main__":
    main()
