"""Pictures and commands: q-map overlays, jaw glyphs, ``dexrl plan``, the planner benchmark's inputs."""

import argparse
import json

import numpy as np
import torch
from PIL import Image

from dexrl.cli import main as dexrl_main
from dexrl.gqcnn import bench
from dexrl.gqcnn.model import FCGQCNN, save_network
from dexrl.grasp.draw import depth_to_gray, draw_grasps, overlay_q_map


def test_q_map_overlay_colours_each_cell_around_its_centre():
    rgb = np.zeros((40, 50, 3), np.uint8)
    q_map = np.zeros((2, 3, 4), np.float32)
    q_map[1, 1, 2] = 1.0  # cell (1, 2) of stride 4, offset 10: centred on pixel (u, v) = (18, 14)
    out = overlay_q_map(rgb, q_map, stride=4, offset=10)
    lit = np.argwhere(out.any(axis=-1))
    assert lit.min(axis=0).tolist() == [12, 16] and lit.max(axis=0).tolist() == [15, 19]


def test_grasps_are_drawn_in_the_colour_of_their_quality():
    rgb = depth_to_gray(np.full((60, 80), 0.7, np.float32))
    out = draw_grasps(
        rgb,
        np.array([[20.0, 30.0], [60.0, 30.0]]),
        np.array([0.0, 1.2]),
        np.array([16.0, 16.0]),
        np.array([0.05, 0.95]),
    )
    assert out.shape == rgb.shape and not np.array_equal(out, rgb)
    red, green = out[30, 20], out[30, 60]
    assert red[0] > red[1] and green[1] > green[0]  # low q red, high q green


def test_depth_to_gray_marks_missing_pixels_and_dims_outside_the_mask():
    depth = np.full((10, 10), 0.7, np.float32)
    depth[0, 0] = 0.0
    depth[5, 5] = 0.6
    mask = np.zeros((10, 10), bool)
    mask[2:8, 2:8] = True
    gray = depth_to_gray(depth, mask)
    assert gray[0, 0].tolist() == [0, 0, 0]
    assert gray[5, 5, 0] > gray[4, 4, 0] > gray[9, 9, 0]


def test_plan_command_writes_the_overlay_and_the_grasps(tmp_path, capsys):
    torch.manual_seed(0)
    network = FCGQCNN()
    with torch.no_grad():
        network.fc5.weight.mul_(0.1)
    save_network(network, tmp_path / "w.safetensors", {"source": "test"})
    depth = np.full((130, 160), 0.7, np.float32)
    depth[40:80, 50:100] = 0.65
    mask = np.zeros_like(depth, bool)
    mask[20:110, 20:140] = True
    np.save(tmp_path / "scene.npy", depth)
    np.save(tmp_path / "mask.npy", mask)
    camera = {"fx": 552.5, "fy": 552.5, "cx": 79.5, "cy": 64.5, "width": 160, "height": 130}
    (tmp_path / "camera.json").write_text(json.dumps(camera))
    args = [
        "plan",
        "--depth",
        str(tmp_path / "scene.npy"),
        "--mask",
        str(tmp_path / "mask.npy"),
        "--intrinsics",
        str(tmp_path / "camera.json"),
        "--weights",
        str(tmp_path / "w.safetensors"),
        "--k",
        "5",
        "--out",
        str(tmp_path / "out"),
    ]
    assert dexrl_main(args) == 0
    assert "5 grasps" in capsys.readouterr().out
    picture = np.asarray(Image.open(tmp_path / "out" / "scene_plan.png"))
    assert picture.shape == (130, 160, 3)
    record = json.loads((tmp_path / "out" / "scene_grasps.json").read_text())
    q = [g["q"] for g in record["grasps"]]
    assert len(q) == 5 and q == sorted(q, reverse=True)
    assert all(mask[int(g["center_px"][1]), int(g["center_px"][0])] for g in record["grasps"])
    assert record["provenance"] == {"source": "test"}


def test_plan_command_explains_missing_weights_and_bad_images(tmp_path, capsys):
    np.save(tmp_path / "scene.npy", np.full((386, 516), 0.7, np.float32))
    assert (
        dexrl_main(
            [
                "plan",
                "--depth",
                str(tmp_path / "scene.npy"),
                "--weights",
                str(tmp_path / "absent.safetensors"),
            ]
        )
        == 1
    )
    assert "dexrl train-gqcnn" in capsys.readouterr().err
    np.save(tmp_path / "stack.npy", np.full((2, 386, 516), 0.7, np.float32))
    assert dexrl_main(["plan", "--depth", str(tmp_path / "stack.npy")]) == 1
    assert "expected one (H, W) image" in capsys.readouterr().err


def test_benchmark_options_and_scenes():
    parser = argparse.ArgumentParser()
    bench.configure(parser)
    args = parser.parse_args(
        ["--device", "cuda:0", "--batch", "1", "8", "--iters", "5", "--json", "out.json"]
    )
    assert args.batch == [1, 8] and args.iters == 5 and args.json == "out.json"
    assert args.depth_npz is None and args.rescore_top == 16
    args = parser.parse_args(["--depth-npz", "heaps.npz", "--rescore-top", "4", "--modes", "fast", "reference"])
    assert args.depth_npz == "heaps.npz" and args.rescore_top == 4 and args.modes == ["fast", "reference"]
    depth, masks = bench.bin_images(2, seed=0)
    assert depth.shape == masks.shape == (2, 386, 516) and masks.dtype == torch.bool
    inside = depth[masks]
    assert (inside == 0).any() and inside[inside > 0].min() > 0.49 and inside.max() < 0.61
    assert not torch.equal(depth[0], depth[1])


def test_rendered_heaps_file_is_what_the_planner_benchmark_reads(tmp_path):
    from dexrl.grasp import CameraIntrinsics
    from dexrl.sim.scene_io import write_heaps_npz

    camera = CameraIntrinsics(fx=500.0, fy=501.0, cx=60.0, cy=40.5, width=120, height=80)
    rounds = [(torch.rand(2, 80, 120), torch.rand(2, 80, 120) > 0.5) for _ in range(2)]
    path = write_heaps_npz(tmp_path / "heaps.npz", rounds, camera)
    depth, masks, cameras = bench.load_npz_images(str(path))
    assert torch.equal(depth, torch.cat([d for d, _ in rounds])) and torch.equal(masks, torch.cat([m for _, m in rounds]))
    assert cameras == [camera] * 4


def test_planner_benchmark_times_each_batch_and_checks_agreement(tmp_path, capsys):
    from dexrl.grasp import CameraIntrinsics
    from dexrl.sim.scene_io import write_heaps_npz

    depth, masks = bench.bin_images(2, seed=3)
    rows, cols = slice(113, 273), slice(158, 358)  # a 160 x 200 piece of the bin, so the run takes seconds
    camera = CameraIntrinsics(fx=552.5, fy=552.5, cx=99.5, cy=79.5, width=200, height=160)
    path = write_heaps_npz(tmp_path / "heaps.npz", [(depth[:, rows, cols], masks[:, rows, cols])], camera)
    parser = argparse.ArgumentParser()
    bench.configure(parser)
    args = parser.parse_args(
        ["--depth-npz", str(path), "--modes", "reference", "fast", "--batch", "1", "2", "--iters", "1",
         "--json", str(tmp_path / "bench.json")]
    )
    assert bench.run(args) == 0
    record = json.loads((tmp_path / "bench.json").read_text())
    assert record["images"] == 2 and record["image_size"] == [160, 200]
    assert [(r["mode"], r["batch"]) for r in record["rows"]] == [
        ("reference", 1), ("reference", 2), ("fast", 1), ("fast", 2)
    ]
    assert all(r["images_per_s"] > 0 and r["network_ms_per_image"] > 0 for r in record["rows"])
    fast = record["rows"][-1]
    assert fast["top1_same"] == 1.0 and fast["max_abs_dq"] < 1e-3
    printed = capsys.readouterr().out
    assert "fast at batch 2:" in printed and "batch 1, >= 99% top-1 agreement" in printed
