"""The weights pipeline (``dexrl pipeline --toy``) end to end on the CPU with the real kit-less engine:
synthesis in physics, training, and the closed-loop evaluation; the trained model must beat chance on the
shards it never saw."""

import json
import math
import subprocess
import sys

import pytest
import torch

from dexrl.gqcnn.dataset import iterate_batches, read_manifest
from dexrl.gqcnn.model import load_network
from dexrl.gqcnn.training import _labelled_bin_logits, binary_metrics

pytestmark = pytest.mark.sim


def _pipeline(out, *extra):
    command = [sys.executable, "-m", "dexrl", "pipeline", "--toy", "--device", "cpu", "--seed", "3", "--out", str(out)]
    return subprocess.run([*command, *extra], capture_output=True, text=True, timeout=1800, check=False)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    done = _pipeline(out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_pipeline_synthesizes_labelled_shards_from_physics(toy_run):
    shards = read_manifest(toy_run / "data")
    stats = json.loads((toy_run / "data" / "synth_stats.json").read_text())
    assert sum(s.count for s in shards) == stats["grasps"] == 448
    assert 0 < sum(s.positives for s in shards) < stats["grasps"]  # both outcomes occur
    assert stats["outcomes"]["success"] == sum(s.positives for s in shards)


def test_pipeline_model_beats_chance_on_held_out_heaps(toy_run):
    network, card = load_network(toy_run / "train" / "best.safetensors")
    held_out = set(card.provenance["dataset"]["val_shards"])
    assert held_out and not held_out & set(card.provenance["dataset"]["train_shards"])
    data = toy_run / "data"
    q, labels = [], []
    with torch.no_grad():
        for batch in iterate_batches(data, [s for s in read_manifest(data) if s.file in held_out], 64):
            q.append(torch.softmax(_labelled_bin_logits(network.eval(), batch), dim=1)[:, 1])
            labels.append(batch.labels)
    metrics = binary_metrics(torch.cat(q), torch.cat(labels))
    positives = int(torch.cat(labels).sum())
    negatives = len(torch.cat(labels)) - positives
    # a random ranking has AUC 0.5 with this standard deviation (Mann-Whitney); ask for two of them
    chance_sd = math.sqrt((positives + negatives + 1) / (12 * positives * negatives))
    assert metrics["auc"] > 0.5 + 2 * chance_sd, metrics
    assert metrics["ap"] > positives / (positives + negatives), metrics


def test_pipeline_evaluates_the_trained_planner_against_the_baseline(toy_run):
    record = json.loads((toy_run / "eval" / "eval_blocks.json").read_text())
    scores = {score["planner"]: score for score in record["scores"]}
    assert set(scores) == {"fcgqcnn", "baseline"}
    for score in scores.values():
        assert score["attempts"] >= 16 and sum(score["outcomes"].values()) == score["attempts"]
    runs = json.loads((toy_run / "pipeline.json").read_text())["runs"]
    assert [run["stage"] for run in runs] == ["synth", "train", "eval"] and all(run["exit"] == 0 for run in runs)


def test_pipeline_resumes_instead_of_starting_again(toy_run):
    again = _pipeline(toy_run, "--stages", "synth,train")
    assert again.returncode == 0, again.stderr[-3000:]
    stats = json.loads((toy_run / "data" / "synth_stats.json").read_text())
    assert stats["shards_kept"] == 7 and stats["shards_written"] == 0
    assert len(json.loads((toy_run / "train" / "history.json").read_text())) == 12


def test_toy_sizes_are_defaults_that_given_options_override(tmp_path):
    import argparse

    from dexrl.cli import pipeline

    parser = argparse.ArgumentParser()
    pipeline.configure(parser)
    toy = pipeline.stage_commands(parser.parse_args(["--toy", "--out", str(tmp_path), "--envs", "16"]))
    synth = toy["synth"][0]
    assert synth[synth.index("--envs") + 1] == "16" and synth[synth.index("--grasps") + 1] == "448"
    assert [command[command.index("--objects") + 1] for command in toy["eval"]] == ["blocks"]
    full = pipeline.stage_commands(parser.parse_args(["--out", str(tmp_path)]))
    assert [command[command.index("--objects") + 1] for command in full["eval"]] == ["seen", "novel"]
    assert full["train"][0][full["train"][0].index("--epochs") + 1] == "30"
    assert "--stream" not in full["synth"][0] and "--attempts-per-env" not in full["synth"][0]
    (streamed,) = pipeline.stage_commands(parser.parse_args(["--out", str(tmp_path), "--attempts-per-env", "16", "--stream"]))["synth"]
    assert streamed[streamed.index("--attempts-per-env") + 1] == "16" and "--stream" in streamed
