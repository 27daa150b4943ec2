"""Object sets: procedural sets, pool rotation, bring-your-own meshes, USD authoring, errors that name the
culprit, and the shapes at rest on a table in the kit-less engine (Newton + MuJoCo-Warp)."""

import numpy as np
import pytest
import torch
import trimesh
import yaml

from dexrl.config import ConfigError
from dexrl.sim.objects import (
    ObjectSetError,
    SetParams,
    ShapeSpec,
    default_cache_dir,
    load_mesh_file,
    load_mesh_folder,
    load_object_set,
    load_set_params,
    make_object_set,
    shape_usd,
    spawner_cfg,
)
from dexrl.sim.objects.procedural import OBJECTS_CONFIG
from dexrl.sim.objects.shapes import COMPOUND_KINDS

RING = {"outer_radius": 0.03, "inner_radius": 0.02, "thickness": 0.008, "segments": 8}
"""A ring with a 4 cm hole (8-gon) lying flat; a 14 mm marble drops through unless it collides as a hull."""


# ---------------------------------------------------------------------------------------------- procedural
@pytest.fixture(scope="module")
def sets():
    return {name: make_object_set(name, seed=1) for name in ("seen", "novel")}


@pytest.mark.parametrize("name", ["seen", "novel"])
def test_procedural_sets_are_seeded_distinct_and_sized(sets, name):
    params = load_set_params()[name]
    shapes = sets[name].shapes
    assert len(shapes) == params.count >= 200
    again, other = make_object_set(name, seed=1), make_object_set(name, seed=2)
    assert [s.digest() for s in shapes] == [s.digest() for s in again.shapes]
    assert len({s.digest() for s in shapes} & {s.digest() for s in other.shapes}) == 0
    assert len({s.digest() for s in shapes}) == len({s.name for s in shapes}) == len(shapes)
    low, high = params.size_range
    extents = np.array([s.max_extent for s in shapes])
    assert extents.min() >= low - 1e-9 and extents.max() <= high + 1e-9
    assert min(min(s.size) for s in shapes) >= params.min_thickness - 1e-9
    kinds = {s.kind for s in shapes}
    assert kinds == {k for k, w in params.kinds.items() if w > 0}
    counts = [sum(s.kind == k for s in shapes) for k in kinds]
    assert max(counts) - min(counts) <= 1  # equal weights in config/objects.yaml: an even mix


def test_novel_shapes_are_smaller_and_non_convex_with_matching_visuals(sets):
    seen, novel = sets["seen"].shapes, sets["novel"].shapes
    assert np.median([s.max_extent for s in novel]) < np.median([s.max_extent for s in seen])
    for kind in COMPOUND_KINDS:
        shape = next(s for s in seen + novel if s.kind == kind)
        parts, mesh = shape.convex_parts(), shape.mesh()
        assert len(parts) >= 2 and all(p.is_convex for p in parts)
        assert mesh.is_volume, shape.name
        hull = trimesh.convex.convex_hull(mesh.vertices)
        assert mesh.volume < 0.95 * hull.volume, f"{shape.name} is not non-convex"
        assert np.allclose(mesh.bounds, [-np.array(shape.size) / 2, np.array(shape.size) / 2], atol=1e-6)
        if kind != "blob":  # pieces tile the solid exactly: the camera sees what the physics collides
            assert mesh.volume == pytest.approx(sum(p.volume for p in parts), rel=1e-6)


def test_pool_rotation_is_reproducible_distinct_and_goes_through_the_set(sets):
    objects = sets["seen"]
    pools = [objects.select_pool(24, rotation=r, seed=5) for r in range(len(objects) // 24)]
    assert [s.name for s in pools[0]] == [s.name for s in objects.select_pool(24, rotation=0, seed=5)]
    assert [s.name for s in pools[0]] != [s.name for s in objects.select_pool(24, rotation=0, seed=6)]
    names = [s.name for pool in pools for s in pool]
    assert len(set(names)) == len(names) == len(objects)  # every shape once before any repeats
    wrapped = objects.select_pool(24, rotation=len(pools), seed=5)
    assert len({s.name for s in wrapped}) == 24
    with pytest.raises(ConfigError, match=r"objects\.pool_size must lie within \[1, 240\]"):
        objects.select_pool(241)
    with pytest.raises(ConfigError, match=r"objects\.rotation must be >= 0"):
        objects.select_pool(24, rotation=-1)


def test_load_object_set_by_name_or_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DEXRL_CACHE", str(tmp_path / "cache"))
    assert default_cache_dir() == tmp_path / "cache" / "objects"
    assert load_object_set("novel", seed=3).shapes[0] == make_object_set("novel", seed=3).shapes[0]
    trimesh.creation.icosphere(radius=0.02).export(tmp_path / "ball.stl")
    assert [s.name for s in load_object_set(str(tmp_path)).shapes] == ["ball"]
    with pytest.raises(
        ConfigError, match=r"objects\.object_set: 'nope' is neither a procedural set \(blocks, novel, seen\)"
    ):
        load_object_set("nope")


# ---------------------------------------------------------------------------------------------- config errors
def _write_sets(tmp_path, **changes):
    data = yaml.safe_load(OBJECTS_CONFIG.read_text())
    for key, value in changes.items():
        section, field = key.split("__")
        data[section][field] = value
    path = tmp_path / "objects.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seen__size_range": [0.1, 0.05]}, r"seen\.size_range: min 0\.1 is greater than max 0\.05"),
        (
            {"novel__size_range": [-0.01, 0.04]},
            r"novel\.size_range must lie within \[0\.005, 0\.5\] m, got \[-0\.01, 0\.04\]",
        ),
        (
            {"seen__kinds": {"box": 1, "pyramid": 1}},
            r"seen\.kinds: unknown kind 'pyramid'; kinds are box, cylinder",
        ),
        ({"seen__kinds": {"box": -1}}, r"seen\.kinds\.box must be a weight >= 0, got -1"),
        ({"novel__count": 0}, r"novel\.count must be an integer within \[1, 100000\], got 0"),
        ({"novel__min_thickness": 0.02}, r"novel\.min_thickness must lie within \[0\.0005, 0\.0125\] m"),
        ({"seen__colour": "red"}, r"unknown config key 'seen\.colour'; keys are count, size_range"),
    ],
)
def test_a_bad_config_value_is_named_with_its_allowed_range(tmp_path, change, message):
    path = _write_sets(tmp_path, **change)
    with pytest.raises(ConfigError, match=message) as error:
        load_set_params(path)
    assert str(path) in str(error.value)


def test_bad_arguments_are_named():
    with pytest.raises(
        ConfigError, match=r"unknown object set 'unseen': the procedural sets are blocks, novel, seen"
    ):
        make_object_set("unseen")
    with pytest.raises(ConfigError, match="seed must be a non-negative integer, got -1"):
        make_object_set("seen", seed=-1)
    with pytest.raises(ConfigError, match=r"custom\.size_range: min 0\.2 is greater than max 0\.1"):
        make_object_set("custom", params=SetParams(size_range=(0.2, 0.1)))
    with pytest.raises(ConfigError, match="units must be one of auto, m, mm, cm; got 'inch'"):
        load_mesh_folder(".", units="inch")
    with pytest.raises(ConfigError, match=r"target_size must lie within \[0\.005, 0\.5\] m, got -0\.1"):
        load_mesh_folder(".", target_size=-0.1)
    box = make_object_set("seen").shapes[0]
    for kwargs, message in [
        ({"mass": -0.1}, r"mass must lie within \[0\.0001, 100\.0\] kg, got -0\.1"),
        ({"mass": 0.1, "density": 500.0}, "give exactly one of mass"),
        ({"mass": 0.1, "friction": 7.0}, r"friction must lie within \[0\.0, 5\.0\], got 7\.0"),
        (
            {"mass": 0.1, "rolling_friction": -1.0},
            r"rolling_friction must lie within \[0\.0, 0\.1\] m, got -1\.0",
        ),
        ({"mass": 0.1, "restitution": float("nan")}, r"restitution must be a number within \[0\.0, 1\.0\]"),
        ({"mass": 0.1, "condim": 2}, "condim must be one of 1, 3, 4, 6, got 2"),
    ]:
        with pytest.raises(ConfigError, match=message):
            spawner_cfg(box, **kwargs)


# -------------------------------------------------------------------------------------------- bring your own
def _seam_split(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Every face with its own three vertices, as texture seams leave an exported mesh."""
    return trimesh.Trimesh(
        mesh.vertices[mesh.faces].reshape(-1, 3), np.arange(3 * len(mesh.faces)).reshape(-1, 3), process=False
    )


def _write_byo_folder(folder):
    """A millimetre OBJ with split seams, a millimetre non-convex ring, a scan with a speck of debris, a
    centimetre USD (its metersPerUnit says so), a texture that is not a mesh."""
    folder.mkdir()
    _seam_split(trimesh.creation.box(extents=(40.0, 20.0, 30.0))).export(folder / "mm_box.obj")
    trimesh.creation.annulus(r_min=12.0, r_max=20.0, height=8.0).export(folder / "mm_ring.obj")
    speck = trimesh.creation.box(extents=(0.001, 0.001, 0.001)).apply_translation((0.1, 0, 0))
    trimesh.util.concatenate([trimesh.creation.icosphere(radius=0.03), speck]).export(folder / "scan.ply")
    _write_usd_box(folder / "cm_block.usda", meters_per_unit=0.01, extents=(5.0, 3.0, 2.0))
    (folder / "texture.png").write_bytes(b"\x89PNG not read")


def _write_usd_box(path, meters_per_unit, extents):
    from pxr import Usd, UsdGeom

    stage = Usd.Stage.CreateNew(str(path))
    UsdGeom.SetStageMetersPerUnit(stage, meters_per_unit)
    box = trimesh.creation.box(extents=extents)
    mesh = UsdGeom.Mesh.Define(stage, "/Block/mesh")
    mesh.CreatePointsAttr([tuple(map(float, v)) for v in box.vertices])
    quads = [
        [0, 1, 3, 2],
        [4, 6, 7, 5],
        [0, 4, 5, 1],
        [2, 3, 7, 6],
        [0, 2, 6, 4],
        [1, 5, 7, 3],
    ]  # polygons, not triangles
    mesh.CreateFaceVertexCountsAttr([4] * 6)
    mesh.CreateFaceVertexIndicesAttr([i for quad in quads for i in quad])
    stage.GetRootLayer().Save()


@pytest.fixture(scope="module")
def byo(tmp_path_factory):
    root = tmp_path_factory.mktemp("byo")
    _write_byo_folder(root / "meshes")
    return root, load_mesh_folder(root / "meshes", cache_dir=root / "cache")


def test_bring_your_own_meshes_units_seams_fragments_and_decomposition(byo):
    root, objects = byo
    by_name = {s.name: s for s in objects.shapes}
    assert sorted(by_name) == ["cm_block", "mm_box", "mm_ring", "scan"]
    assert np.allclose(by_name["mm_box"].size, (0.04, 0.02, 0.03), atol=1e-7)  # millimetres, said nowhere
    box_mesh = by_name["mm_box"].mesh()
    assert len(box_mesh.vertices) == 8 and box_mesh.is_volume  # seams merged: a closed box again
    assert len(by_name["mm_box"].convex_parts()) == 1  # convex: collides as its own hull
    assert np.allclose(
        by_name["cm_block"].size, (0.05, 0.03, 0.02), atol=1e-7
    )  # from the USD's metersPerUnit
    assert by_name["scan"].size == pytest.approx((0.06, 0.06, 0.06), abs=2e-3)  # the speck 7 cm away is gone
    ring = by_name["mm_ring"]
    assert ring.size == pytest.approx((0.04, 0.04, 0.008), abs=1e-4)
    assert len(ring.convex_parts()) >= 4  # non-convex: decomposed, not one hull over the hole
    hole = trimesh.creation.cylinder(radius=0.009, height=0.02)
    assert all(
        len(trimesh.boolean.intersection([p, hole], engine="manifold").faces) == 0
        for p in ring.convex_parts()
    )
    cached = list((root / "cache" / "decompositions").glob("*.npz"))
    assert len(cached) == 1  # only the non-convex mesh needed CoACD


def test_decompositions_are_cached_and_units_can_be_overridden(byo, monkeypatch):
    import coacd

    root, objects = byo
    monkeypatch.setattr(
        coacd, "run_coacd", lambda *a, **k: pytest.fail("the cached decomposition was not used")
    )
    again = load_mesh_file(root / "meshes" / "mm_ring.obj", cache_dir=root / "cache")
    assert again == next(s for s in objects.shapes if s.name == "mm_ring")
    scaled = load_mesh_file(root / "meshes" / "mm_ring.obj", target_size=0.08, cache_dir=root / "cache")
    assert scaled.max_extent == pytest.approx(0.08)
    as_cm = load_mesh_file(root / "meshes" / "mm_box.obj", units="cm", cache_dir=root / "cache")
    assert as_cm.max_extent == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("file_name", "content", "reason"),
    [
        ("garbage.obj", b"this is not an obj file\nf 1 2 9\n", "empty"),
        ("binary.stl", bytes(range(256)) * 3, "cannot be read as a mesh|empty"),
        ("empty.stl", b"", "cannot be read as a mesh|empty"),
        ("nan.obj", b"v 0 0 0\nv nan 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 4\nf 1 3 4\nf 2 3 4\n", "NaN"),
        (
            "flat.obj",
            b"v 0 0 0\nv 0.05 0 0\nv 0 0.05 0\nv 0.05 0.05 0\nf 1 2 3\nf 2 4 3\n",
            "flat or degenerate",
        ),
        (
            "points.ply",
            (
                b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
                b"property float z\nend_header\n0 0 0\n1 0 0\n0 1 0\n"
            ),
            "not a mesh",
        ),
        ("no_mesh.usda", b'#usda 1.0\ndef Xform "World" {}\n', "holds no UsdGeom.Mesh"),
        (
            "huge.obj",
            trimesh.creation.box(extents=(9000.0, 9000.0, 9000.0)).export(file_type="obj").encode(),
            "cannot tell its units",
        ),
    ],
)
def test_a_bad_mesh_file_is_named_with_the_reason(tmp_path, file_name, content, reason):
    folder = tmp_path / "meshes"
    folder.mkdir()
    trimesh.creation.box(extents=(0.03, 0.03, 0.03)).export(folder / "good.obj")
    (folder / file_name).write_bytes(content)
    with pytest.raises(ObjectSetError, match=file_name) as error:
        load_mesh_folder(folder, cache_dir=tmp_path / "cache")
    assert any(r in str(error.value) for r in reason.split("|")), str(error.value)


def test_a_folder_without_meshes_is_named(tmp_path):
    with pytest.raises(ObjectSetError, match="holds no mesh files"):
        load_mesh_folder(tmp_path)
    with pytest.raises(ObjectSetError, match="not a folder"):
        load_mesh_folder(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------- USD authoring
def test_usd_file_has_a_visual_mesh_and_hidden_convex_colliders(tmp_path):
    from pxr import Usd, UsdGeom, UsdPhysics

    ring = ShapeSpec.build("ring", "ring", RING)
    path = shape_usd(ring, tmp_path)
    assert path == shape_usd(ring, tmp_path) and path.name.startswith(f"ring_{ring.digest()}")
    stage = Usd.Stage.Open(str(path))
    root = stage.GetDefaultPrim()
    assert root.HasAPI(UsdPhysics.RigidBodyAPI) and root.HasAPI(UsdPhysics.MassAPI)
    visual = stage.GetPrimAtPath("/Object/visual")
    assert visual.IsA(UsdGeom.Mesh) and not visual.HasAPI(UsdPhysics.CollisionAPI)
    colliders = [p for p in Usd.PrimRange(root) if p.HasAPI(UsdPhysics.CollisionAPI)]
    assert len(colliders) == RING["segments"]
    for prim in colliders:
        assert prim.IsA(UsdGeom.Mesh)
        assert UsdPhysics.MeshCollisionAPI(prim).GetApproximationAttr().Get() == "convexHull"
        assert UsdGeom.Imageable(prim).ComputePurpose() == UsdGeom.Tokens.guide


# ---------------------------------------------------------------------------------------------- physics
NUM_ENVS = 2
SETTLE_STEPS = 180  # 1.5 s at 1/120 s


@pytest.fixture(scope="module")
def table_world(sets, byo, tmp_path_factory):
    """One shape of each kind of spawner on a table in 2 envs, settled for 1.5 s.

    Box and capsule are native primitives; hull, cone, L-shape, star and the user's meshes are USD files with
    convex colliders; the ring (a USD compound) has a marble dropped into its hole."""
    import isaaclab.sim as sim_utils
    from isaaclab.assets import AssetBaseCfg, RigidObjectCfg, RigidObjectCollectionCfg
    from isaaclab.scene import InteractiveScene, InteractiveSceneCfg

    from dexrl.sim.bin_world import physics_cfg
    from dexrl.sim.scene_cfg import SceneSettingsCfg

    seen, user = sets["seen"].shapes, {s.name: s for s in byo[1].shapes}

    def first(kind):
        return next(s for s in seen + sets["novel"].shapes if s.kind == kind)

    ring = ShapeSpec.build("ring", "ring", RING)
    marble = ShapeSpec.build("marble", "sphere", {"radius": 0.007})
    shapes = [
        first("box"),
        first("capsule"),
        first("hull"),
        first("cone"),
        first("l_shape"),
        first("star"),
        user["mm_box"],
        user["mm_ring"],
        ring,
        marble,
    ]
    frictions = [0.5 + 0.05 * i for i in range(len(shapes))]
    density = {"mm_box": 500.0}  # [kg/m^3]: mass from the collision volume; the others get 0.05 kg
    cache = tmp_path_factory.mktemp("usd")
    rigid = {}
    for i, shape in enumerate(shapes):
        if shape is marble:  # above the ring's centre, inside its hole
            x, y = rigid[f"obj_{i - 1:02d}"].init_state.pos[:2]
            z = RING["thickness"] + 0.02
        else:
            x, y, z = -0.4 + 0.16 * (i % 6), -0.1 + 0.2 * (i // 6), 0.5 * np.linalg.norm(shape.size) + 0.005
        mass = {"density": density[shape.name]} if shape.name in density else {"mass": 0.05}
        rigid[f"obj_{i:02d}"] = RigidObjectCfg(
            prim_path=f"{{ENV_REGEX_NS}}/Pool/obj_{i:02d}",
            spawn=spawner_cfg(shape, friction=frictions[i], cache_dir=cache, **mass),
            init_state=RigidObjectCfg.InitialStateCfg(pos=(x, y, z)),
        )
    settings = SceneSettingsCfg(num_envs=NUM_ENVS, device="cpu")
    scene_cfg = InteractiveSceneCfg(num_envs=NUM_ENVS, env_spacing=2.0)
    scene_cfg.table = AssetBaseCfg(  # top at z = 0
        prim_path="{ENV_REGEX_NS}/Table",
        spawn=sim_utils.CuboidCfg(size=(1.2, 0.6, 0.1), collision_props=sim_utils.UsdPhysicsCollisionCfg()),
        init_state=AssetBaseCfg.InitialStateCfg(pos=(0.0, 0.0, -0.05)),
    )
    scene_cfg.objects = RigidObjectCollectionCfg(rigid_objects=rigid)
    sim_utils.SimulationContext.clear_instance()
    sim = sim_utils.SimulationContext(
        sim_utils.SimulationCfg(dt=settings.physics.dt, device="cpu", physics=physics_cfg(settings))
    )
    scene = InteractiveScene(scene_cfg)
    sim.reset()
    objects = scene["objects"]
    for _ in range(SETTLE_STEPS):
        scene.write_data_to_sim()
        sim.step(render=False)
        scene.update(sim.get_physics_dt())
    yield {"sim": sim, "scene": scene, "objects": objects, "shapes": shapes, "frictions": frictions}
    sim_utils.SimulationContext.clear_instance()


def _lowest_points(world) -> torch.Tensor:
    """(N, P) lowest z of every object's collision pieces in the world [m], from the simulated poses."""
    from isaaclab.utils.math import quat_apply

    pose = world["objects"].data.body_link_pose_w.torch  # (N, P, 7): position, quaternion (x, y, z, w)
    lowest = torch.empty(pose.shape[:2])
    for j, shape in enumerate(world["shapes"]):
        points = torch.tensor(np.concatenate([p.vertices for p in shape.convex_parts()]), dtype=torch.float32)
        for env in range(pose.shape[0]):
            world_points = quat_apply(pose[env, j, 3:].expand(len(points), 4), points) + pose[env, j, :3]
            lowest[env, j] = world_points[:, 2].min()
    return lowest


def test_every_kind_comes_to_rest_on_the_table(table_world):
    objects, shapes = table_world["objects"], table_world["shapes"]
    names = [s.name for s in shapes]
    assert torch.isfinite(objects.data.body_link_pose_w.torch).all()
    lowest = _lowest_points(table_world)
    # Touching the table top (z = 0): not fallen through, not floating; contacts may overlap by a millimetre.
    assert (lowest.abs() < 0.001).all(), dict(zip(names, lowest[0].tolist()))
    speed = objects.data.body_lin_vel_w.torch.norm(dim=-1)
    spin = objects.data.body_ang_vel_w.torch.norm(dim=-1)
    assert (speed < 0.02).all(), dict(zip(names, speed[0].tolist()))
    assert (spin < 0.5).all(), dict(zip(names, spin[0].tolist()))
    local = objects.data.body_link_pose_w.torch[..., :3] - table_world["scene"].env_origins.unsqueeze(1)
    assert torch.allclose(local[0], local[1], atol=1e-3)  # every env holds the same shapes and behaves alike


def test_a_ring_collides_as_a_ring_not_as_its_hull(table_world):
    names = [s.name for s in table_world["shapes"]]
    pos = table_world["objects"].data.body_link_pose_w.torch[..., :3]
    marble, ring = names.index("marble"), names.index("ring")
    assert torch.allclose(pos[:, marble, 2], torch.tensor(0.007), atol=0.002)  # on the table, inside the hole
    assert (pos[:, ring, 2] < RING["thickness"]).all()  # the ring lies flat
    assert ((pos[:, marble, :2] - pos[:, ring, :2]).norm(dim=-1) < RING["inner_radius"]).all()


def test_mass_and_friction_reach_every_collision_piece(table_world):
    import warp as wp

    shapes, frictions = table_world["shapes"], table_world["frictions"]
    mass = table_world["objects"].data.body_mass.torch
    mm_box = [s.name for s in shapes].index("mm_box")
    expected = torch.full_like(mass, 0.05)
    expected[:, mm_box] = 500.0 * 0.04 * 0.02 * 0.03
    assert torch.allclose(mass, expected, rtol=1e-4)
    model = table_world["sim"].physics_manager.get_model()
    body_of_shape, mu = model.shape_body.numpy(), wp.to_torch(model.shape_material_mu).numpy()
    rolling = wp.to_torch(model.shape_material_mu_rolling).numpy()
    labels = list(model.body_label)
    for j, shape in enumerate(shapes):
        body = labels.index(f"/World/envs/env_0/Pool/obj_{j:02d}")
        pieces = mu[body_of_shape == body]
        assert len(pieces) == (1 if shape.is_primitive else len(shape.convex_parts())), shape.name
        assert np.allclose(pieces, frictions[j]), shape.name
        assert np.allclose(rolling[body_of_shape == body], 0.002), shape.name
