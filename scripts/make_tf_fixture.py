"""Write tests/fixtures/tf_gqcnn: GQ-CNN checkpoints saved by TensorFlow itself, with the outputs TF computed.

The test suite reads these checkpoints with DexRL's TensorFlow-free reader and checks that the PyTorch
networks reproduce TensorFlow's logits (tests/test_gqcnn_tf_checkpoint.py). The weights are random
(He-normal, seeded); the variable names and shapes are those of the released FC-GQCNN-4.0-PJ and GQCNN-4.0-PJ
models, and the graphs are built from plain TF ops as the released architecture defines them: VALID
convolutions with ReLU, 2x2 max-pools with SAME padding; the crop network applies fc3 as a dense layer to the
flattened (h, w, c) pool2 output, the FC network applies fc3 as a 17x17 convolution with the dense weights
reshaped, and fc4/fc5 as 1x1 convolutions.

This needs TensorFlow 1.15, which installs only into Python 3.7; run it once, outside the DexRL venv:

    $(pyenv root)/versions/3.7.16/bin/python -m venv /path/to/tf115
    /path/to/tf115/bin/pip install tensorflow-cpu==1.15.0 'protobuf<4' numpy
    /path/to/tf115/bin/python scripts/make_tf_fixture.py

It (re)writes, per network, ``model.ckpt.index``, ``model.ckpt.data-00000-of-00001``, ``config.json``, the
normalisation ``.npy`` files of a released model, and ``inputs_*.npy`` / ``outputs_logits.npy``.
"""

import json
import os

import numpy as np
import tensorflow as tf

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "tf_gqcnn")
FC_NORM = {"im_depth_sub_mean": 0.0101286, "im_depth_sub_std": 0.0500007}
CROP_NORM = {"im_mean": 0.772803, "im_std": 0.068166, "pose_mean": 0.755629, "pose_std": 0.068934}
CONVS = [("conv1_1", 9, 1), ("conv1_2", 5, 16), ("conv2_1", 5, 16), ("conv2_2", 5, 16)]


def he_normal(rng, shape, fan_in):
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def small_bias(rng, size):
    return (0.05 * rng.standard_normal(size)).astype(np.float32)


def official_weights(rng, crop_network):
    """name -> array, with the released models' variable names and TF layouts (HWIO kernels, [in, out]
    dense)."""
    weights = {}
    for name, size, channels in CONVS:
        weights[f"im_stream/{name}/{name}_weights"] = he_normal(
            rng, (size, size, channels, 16), size * size * channels
        )
        weights[f"im_stream/{name}/{name}_bias"] = small_bias(rng, 16)
    weights["im_stream/fc3_weights"] = he_normal(rng, (4624, 128), 4624)
    weights["im_stream/fc3_bias"] = small_bias(rng, 128)
    if crop_network:
        weights["pose_stream/pc1_weights"] = he_normal(rng, (1, 16), 1)
        weights["pose_stream/pc1_bias"] = small_bias(rng, 16)
        weights["merge_stream/fc4_input_1_weights"] = he_normal(rng, (128, 128), 144)
        weights["merge_stream/fc4_input_2_weights"] = he_normal(rng, (16, 128), 144)
        weights["merge_stream/fc4_bias"] = small_bias(rng, 128)
        weights["merge_stream/fc5_weights"] = he_normal(rng, (128, 2), 128)
        weights["merge_stream/fc5_bias"] = small_bias(rng, 2)
    else:
        weights["im_stream/fc4_weights"] = he_normal(rng, (128, 128), 128)
        weights["im_stream/fc4_bias"] = small_bias(rng, 128)
        weights["im_stream/fc5_weights"] = he_normal(rng, (128, 32), 128)
        weights["im_stream/fc5_bias"] = small_bias(rng, 32)
    return weights


def image_stream(x, v):
    for name, _, _ in CONVS:
        x = tf.nn.relu(
            tf.nn.conv2d(x, v[f"im_stream/{name}/{name}_weights"], [1, 1, 1, 1], "VALID")
            + v[f"im_stream/{name}/{name}_bias"]
        )
        if name.endswith("_2"):
            x = tf.nn.max_pool(x, [1, 2, 2, 1], [1, 2, 2, 1], "SAME")
    return x


def fc_graph(images, depths, v):
    """images (N, H, W, 1) [m], depths (N, D) [m] -> logits (N, D, h, w, 32); every image is evaluated at each
    of its D grasp depths, which are subtracted in the graph."""
    count, bins = depths.shape.as_list()
    tiled = tf.reshape(
        tf.tile(images[:, None], [1, bins, 1, 1, 1]), [count * bins] + images.shape.as_list()[1:]
    )
    x = (tiled - tf.reshape(depths, (-1, 1, 1, 1)) - FC_NORM["im_depth_sub_mean"]) / FC_NORM[
        "im_depth_sub_std"
    ]
    x = image_stream(x, v)
    fc3 = tf.reshape(v["im_stream/fc3_weights"], (17, 17, 16, 128))
    x = tf.nn.relu(tf.nn.conv2d(x, fc3, [1, 1, 1, 1], "VALID") + v["im_stream/fc3_bias"])
    x = tf.nn.relu(
        tf.nn.conv2d(x, tf.reshape(v["im_stream/fc4_weights"], (1, 1, 128, 128)), [1, 1, 1, 1], "VALID")
        + v["im_stream/fc4_bias"]
    )
    x = (
        tf.nn.conv2d(x, tf.reshape(v["im_stream/fc5_weights"], (1, 1, 128, 32)), [1, 1, 1, 1], "VALID")
        + v["im_stream/fc5_bias"]
    )
    return tf.reshape(x, [count, bins] + x.shape.as_list()[1:])


def crop_graph(crops, depths, v):
    """crops (N, 96, 96, 1) [m], depths (N, 1) [m] -> logits (N, 2)."""
    x = image_stream((crops - CROP_NORM["im_mean"]) / CROP_NORM["im_std"], v)
    fc3 = tf.nn.relu(
        tf.matmul(tf.reshape(x, (-1, 4624)), v["im_stream/fc3_weights"]) + v["im_stream/fc3_bias"]
    )
    pose = (depths - CROP_NORM["pose_mean"]) / CROP_NORM["pose_std"]
    pc1 = tf.nn.relu(tf.matmul(pose, v["pose_stream/pc1_weights"]) + v["pose_stream/pc1_bias"])
    fc4 = tf.nn.relu(
        tf.matmul(fc3, v["merge_stream/fc4_input_1_weights"])
        + tf.matmul(pc1, v["merge_stream/fc4_input_2_weights"])
        + v["merge_stream/fc4_bias"]
    )
    return tf.matmul(fc4, v["merge_stream/fc5_weights"]) + v["merge_stream/fc5_bias"]


def bin_images(rng, count, height, width):
    """Depth images [m]: a floor at 0.70 m, a few boxes 3-8 cm high, 1 mm sensor noise."""
    images = np.full((count, height, width), 0.70, np.float32)
    for image in images:
        for _ in range(3):
            top, left = rng.integers(0, height - 30), rng.integers(0, width - 30)
            image[top : top + rng.integers(15, 40), left : left + rng.integers(15, 40)] = rng.uniform(
                0.62, 0.67
            )
    return images + rng.normal(0, 0.001, images.shape).astype(np.float32)


def write_model(folder, weights, config, normalization, inputs, build):
    os.makedirs(folder, exist_ok=True)
    tf.reset_default_graph()
    variables = {name: tf.Variable(value, name=name.replace("/", "__")) for name, value in weights.items()}
    placeholders = {name: tf.placeholder(tf.float32, value.shape) for name, value in inputs.items()}
    logits = build(*placeholders.values(), variables)
    with tf.Session() as session:
        session.run(tf.global_variables_initializer())
        outputs = session.run(logits, {placeholders[name]: value for name, value in inputs.items()})
        tf.train.Saver(variables).save(
            session, os.path.join(folder, "model.ckpt"), write_meta_graph=False, write_state=False
        )
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    for name, value in normalization.items():
        np.save(os.path.join(folder, name + ".npy"), np.array(value, np.float32))
    for name, value in inputs.items():
        np.save(os.path.join(folder, "inputs_" + name + ".npy"), value)
    np.save(os.path.join(folder, "outputs_logits.npy"), outputs.astype(np.float32))


def main():
    rng = np.random.default_rng(2019)
    note = (
        "random weights with the released variable names, written by scripts/make_tf_fixture.py "
        f"(TF {tf.__version__})"
    )
    images = bin_images(rng, 2, 121, 143)  # odd sizes: both SAME max-pools round up
    depths = np.array([[0.63, 0.66, 0.69], [0.62, 0.65, 0.70]], np.float32)
    write_model(
        os.path.join(OUT, "fc_gqcnn"),
        official_weights(rng, crop_network=False),
        {
            "note": note,
            "gqcnn": {
                "input_depth_mode": "im_depth_sub",
                "angular_bins": 16,
                "gripper_mode": "parallel_jaw",
                "im_height": 96,
                "im_width": 96,
                "im_channels": 1,
            },
        },
        FC_NORM,
        {"images": images[..., None], "depths": depths},
        fc_graph,
    )
    crops = bin_images(rng, 4, 96, 96)
    write_model(
        os.path.join(OUT, "gqcnn"),
        official_weights(rng, crop_network=True),
        {
            "note": note,
            "gqcnn": {
                "input_depth_mode": "pose_stream",
                "gripper_mode": "parallel_jaw",
                "im_height": 96,
                "im_width": 96,
                "im_channels": 1,
            },
        },
        CROP_NORM,
        {"crops": crops[..., None], "depths": np.array([[0.60], [0.64], [0.67], [0.72]], np.float32)},
        crop_graph,
    )


if __name__ == "__main__":
    main()
