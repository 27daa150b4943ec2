"""Object sets: procedural generation, pool rotation, bring-your-own meshes and their errors."""

import numpy as np
import pytest
import trimesh

from dexrl.config import ConfigError
from dexrl.sim.objects import SET_SIZE, SIZE_RANGES, ObjectSetError, load_mesh_folder, load_object_set, make_object_set
from dexrl.sim.settings import load_scene_settings


@pytest.mark.parametrize("name", ["seen", "novel"])
def test_procedural_sets_are_seeded_distinct_and_in_their_size_range(name):
    first, again, other = make_object_set(name, seed=1), make_object_set(name, seed=1), make_object_set(name, seed=2)
    assert len(first.shapes) == SET_SIZE >= 200
    assert [s.size for s in first.shapes] == [s.size for s in again.shapes]
    assert [s.size for s in first.shapes] != [s.size for s in other.shapes]
    assert len({s.name for s in first.shapes}) == SET_SIZE
    assert len({tuple(round(v, 6) for v in s.size) for s in first.shapes}) == SET_SIZE  # distinct geometry
    low, high = SIZE_RANGES[name]
    extents = np.array([s.max_extent for s in first.shapes])
    assert extents.min() >= 0.5 * low and extents.max() <= 1.3 * high  # compounds may overhang their nominal size
    kinds = {s.kind for s in first.shapes}
    expected = {"box", "cylinder", "capsule", "sphere", "cone", "hull", "l_shape", "t_shape"} if name == "seen" else {"blob", "plate", "ring", "star"}
    assert kinds == expected


def test_novel_shapes_are_smaller_and_non_convex():
    seen, novel = make_object_set("seen"), make_object_set("novel")
    assert np.median([s.max_extent for s in novel.shapes]) < np.median([s.max_extent for s in seen.shapes])
    rings = [s for s in novel.shapes if s.kind == "ring"]
    assert all(len(s.parts) >= 7 for s in rings)  # a ring is a union of convex segments, not its hull


def test_pool_rotation_picks_other_shapes_and_is_reproducible():
    objects = make_object_set("seen")
    a = objects.select_pool(24, rotation=0, seed=5)
    assert [s.name for s in a] == [s.name for s in objects.select_pool(24, rotation=0, seed=5)]
    b = objects.select_pool(24, rotation=1, seed=5)
    assert len({s.name for s in a}) == 24 and not {s.name for s in a} & {s.name for s in b}
    with pytest.raises(ConfigError, match="pool_size"):
        objects.select_pool(SET_SIZE + 1)


def _write_box_obj(path, extents, seam_split=False):
    mesh = trimesh.creation.box(extents=extents)
    if seam_split:  # duplicate every vertex per face, as texture seams do
        mesh = trimesh.Trimesh(mesh.vertices[mesh.faces].reshape(-1, 3), np.arange(len(mesh.faces) * 3).reshape(-1, 3), process=False)
    mesh.export(path)


def test_bring_your_own_meshes_in_millimetres_with_seams(tmp_path):
    _write_box_obj(tmp_path / "mm_box.obj", (40.0, 20.0, 30.0))  # millimetres, not said in the file
    _write_box_obj(tmp_path / "seams.obj", (0.05, 0.03, 0.02), seam_split=True)
    ring = trimesh.creation.annulus(r_min=0.015, r_max=0.025, height=0.01)
    ring.export(tmp_path / "ring.stl")
    objects = load_mesh_folder(tmp_path, cache_dir=tmp_path / "cache")
    by_name = {s.name: s for s in objects.shapes}
    assert np.allclose(by_name["mm_box"].size, (0.04, 0.02, 0.03), atol=1e-6)
    assert np.allclose(by_name["seams"].size, (0.05, 0.03, 0.02), atol=1e-6)
    assert len(by_name["mm_box"].parts) == 1  # convex: its own hull
    assert len(by_name["ring"].parts) > 1  # non-convex: decomposed
    scaled = load_mesh_folder(tmp_path, units="mm", target_size=0.08, cache_dir=tmp_path / "cache")
    assert max(scaled.shapes[0].size) == pytest.approx(0.08)


def test_a_broken_mesh_file_is_named_in_the_error(tmp_path):
    _write_box_obj(tmp_path / "good.obj", (0.03, 0.03, 0.03))
    (tmp_path / "broken.obj").write_text("v 0 0 0\nthis is not an obj file\nf 1 2 9\n")
    with pytest.raises(ObjectSetError, match="broken.obj"):
        load_mesh_folder(tmp_path, cache_dir=tmp_path / "cache")
    (tmp_path / "broken.obj").unlink()
    (tmp_path / "flat.stl").write_bytes(trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]]).export(file_type="stl"))
    with pytest.raises(ObjectSetError, match="flat.stl"):
        load_mesh_folder(tmp_path, cache_dir=tmp_path / "cache")


def test_unknown_sets_and_bad_config_values_name_the_key(tmp_path):
    with pytest.raises(ObjectSetError, match="nope"):
        load_object_set("nope")
    with pytest.raises(ConfigError, match="randomization.mass_range"):
        load_scene_settings(["randomization.mass_range=[0.5, 0.1]"])
    with pytest.raises(ConfigError, match="objects.count_range"):
        load_scene_settings(["objects.count_range=[5, 40]"])
    with pytest.raises(ConfigError, match="unknown config key 'bin.colour'"):
        load_scene_settings(["bin.colour=3"])
    with pytest.raises(ConfigError, match="camera.height_above_floor must be a number"):
        load_scene_settings(["camera.height_above_floor=high"])
