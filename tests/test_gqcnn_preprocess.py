"""Grid conventions (cells, angle bins, mask), inpainting and crop extraction."""

import math

import torch

from dexrl.gqcnn.grid import angle_to_bin, bin_to_angle, cell_centers, cell_of_pixel, grid_mask, output_size
from dexrl.gqcnn.preprocess import extract_crops, inpaint


def test_angle_bins_round_trip_and_follow_the_released_convention():
    bins = torch.arange(16)
    angles = bin_to_angle(bins, 16)
    assert torch.equal(angle_to_bin(angles, 16), bins)
    assert math.isclose(
        angles[0].item(), math.pi / 2 - math.pi / 32, rel_tol=1e-6
    )  # bin 0: nearly vertical, up
    assert math.isclose(angles[15].item(), -math.pi / 2 + math.pi / 32, rel_tol=1e-6)
    assert (
        angle_to_bin(torch.tensor(0.01), 16).item() == 7 and angle_to_bin(torch.tensor(-0.01), 16).item() == 8
    )


def test_angle_bins_respect_the_half_turn_symmetry_and_the_edges():
    angles = torch.linspace(-3.0, 3.0, 41)
    assert torch.equal(angle_to_bin(angles, 16), angle_to_bin(angles + math.pi, 16))
    edges = angle_to_bin(
        torch.tensor([math.pi / 2, -math.pi / 2, math.pi / 2 - 1e-6], dtype=torch.float64), 16
    )
    assert edges.tolist() == [15, 15, 0]  # +-pi/2 are one axis; the edge value lands in the last bin
    assert angle_to_bin(torch.tensor(0.3), 1).item() == 0


def test_cells_map_to_crop_centres_and_back():
    rows, cols = torch.tensor([0, 0, 73]), torch.tensor([0, 105, 105])
    centers = cell_centers(rows, cols)
    assert centers.tolist() == [[48.0, 48.0], [468.0, 48.0], [468.0, 340.0]]
    back_rows, back_cols = cell_of_pixel(centers[:, 0] + 1.2, centers[:, 1] - 1.9)
    assert torch.equal(back_rows, rows) and torch.equal(back_cols, cols)


def test_grid_mask_samples_the_mask_at_cell_centres_inside_the_image():
    mask = torch.zeros(1, 386, 516, dtype=torch.bool)
    mask[0, 100, 200] = True  # the centre of cell (13, 38)
    mask[0, 101, 201] = True  # no cell centre
    mask[0, 340, 468] = True  # cell (73, 105): its crop leaves the image
    cells = grid_mask(mask)
    assert cells.shape == (1, *output_size(386, 516))
    assert cells.nonzero().tolist() == [[0, 13, 38]]
    full = grid_mask(torch.ones(2, 386, 516, dtype=torch.bool))
    assert full[:, :73, :105].all() and not full[:, 73].any() and not full[:, :, 105].any()


def test_inpainting_fills_holes_and_keeps_valid_pixels():
    rows = torch.arange(60, dtype=torch.float32)[:, None]
    cols = torch.arange(80, dtype=torch.float32)[None, :]
    ramp = 0.6 + 0.001 * rows + 0.0005 * cols  # a tilted plane
    depth = torch.stack((ramp, ramp.clone()))
    depth[0, 20:30, 30:45] = 0  # a hole
    depth[0, 0:5, 0:5] = 0  # a hole at the corner
    filled = inpaint(depth)
    assert (filled > 0).all()
    assert torch.equal(filled[depth > 0], depth[depth > 0])
    assert torch.equal(filled[1], depth[1])  # an image without holes is untouched
    assert (filled[0, 20:30, 30:45] - ramp[20:30, 30:45]).abs().max() < 0.01
    assert ((filled[0, 20:30, 30:45] >= ramp.min()) & (filled[0, 20:30, 30:45] <= ramp.max())).all()


def test_inpainting_leaves_an_all_missing_image_empty():
    assert not inpaint(torch.zeros(1, 20, 30)).any()


def test_crops_are_centred_on_the_grasp_and_padded_outside_the_image():
    depth = torch.arange(2 * 120 * 130, dtype=torch.float32).reshape(2, 120, 130) + 1
    centers = torch.tensor([[[60.0, 50.0], [10.4, 5.6]], [[48.0, 48.0], [129.0, 119.0]]])
    crops = extract_crops(depth, centers, size=96)
    assert crops.shape == (2, 2, 96, 96)
    assert torch.equal(crops[0, 0], depth[0, 2:98, 12:108])
    assert torch.equal(crops[1, 0], depth[1, :96, :96])
    assert torch.equal(crops[0, 1, 42:, 38:], depth[0, :54, :58])  # centre rounds to (10, 6)
    assert not crops[0, 1, :42].any() and not crops[0, 1, :, :38].any()
    assert crops[1, 1, 48, 48] == depth[1, 119, 129] and not crops[1, 1, 49:].any()
