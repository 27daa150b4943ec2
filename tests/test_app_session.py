"""The session controller on the real kit-less simulator (1 env, a few objects) with a remote planner."""

from __future__ import annotations

import pytest
import torch

from dexrl.app import PlannerStatus, Session, SessionConfig
from dexrl.app.sac_corrector import SacCorrector
from dexrl.grasp import PlannerUnavailable
from dexrl.sim.grasp_runner import GraspRunner
from dexrl.sim.settings import load_scene_settings
from gqcnn_bridge.backends import load_backend
from gqcnn_bridge.client import Backoff, RemotePlanner
from gqcnn_bridge.server import ServerConfig, ServerThread

TIMEOUT_S = 600.0  # generous: the first build compiles Warp kernels on a shared CPU


def _serve(port: int = 0) -> ServerThread:
    return ServerThread(load_backend("highest-object"), ServerConfig(port=port)).start()


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    server = _serve()
    planner = RemotePlanner(
        server.url,
        timeout_s=30.0,
        connect_timeout_s=2.0,
        backoff=Backoff(initial_s=0.05, max_delay_s=0.2, attempts=2),
    )
    settings = load_scene_settings(
        ["objects.pool_size=4", "objects.count_range=[3,4]"], num_envs=1, seed=2, device="cpu"
    )
    gripper_dir = tmp_path_factory.mktemp("gripper")
    trainer = SacCorrector(settings, batch_size=2, gradient_steps=2, seed=0)
    session = Session(
        SessionConfig(settings, planner_name="remote highest-object", top_k=3),
        planner,
        trainer=trainer,
        runner_factory=lambda s, p: GraspRunner(s, p, asset_dir=gripper_dir),
    ).start()
    session.wait_for(lambda s: s.geometry is not None and s.depth is not None, TIMEOUT_S)
    yield session, server, trainer
    session.close()
    server.stop()


def test_spawn_plan_execute_updates_the_state(rig):
    session, _, _ = rig
    session.spawn(count=3, seed=5, noise=False, randomize=False).result(TIMEOUT_S)
    spawned = session.state()
    assert spawned.depth.shape[0] == 1 and (spawned.depth > 0).any()
    assert spawned.points.shape == (1, session.config.points_per_env, 3)
    assert spawned.proposed == [] and spawned.q_map is None

    session.plan().result(TIMEOUT_S)
    planned = session.state()
    assert planned.planner_status is PlannerStatus.READY
    assert 1 <= len(planned.proposed[0]) <= 3
    qs = [grasp["q"] for grasp in planned.proposed[0]]
    assert qs == sorted(qs, reverse=True)
    assert planned.q_map is not None and planned.q_map.max() > 0  # the baseline's depth stand-in
    assert "stand-in" in planned.q_map_source
    best = planned.proposed[0][0]
    origin = planned.geometry.env_origins[0]
    half_x, half_y = (size / 2 for size in planned.geometry.interior_size)
    assert abs(best["position"][0] - origin[0]) < half_x and abs(best["position"][1] - origin[1]) < half_y

    session.execute().result(TIMEOUT_S)
    executed = session.state()
    assert executed.attempts == planned.attempts + 1
    assert executed.last_outcome is not None and len(executed.last_outcome) == 1
    assert executed.executed is not None and executed.attempts_per_s > 0
    assert executed.proposed == []  # the heap changed: the old plan is gone
    low, high = executed.success_ci
    assert 0.0 <= low <= high <= 1.0


def test_a_bad_command_becomes_a_message_and_the_session_goes_on(rig):
    session, _, _ = rig
    with pytest.raises(ValueError):
        session.spawn(count=99).result(TIMEOUT_S)
    assert "object count" in session.state().message
    session.plan().result(TIMEOUT_S)
    assert session.state().proposed


def test_training_runs_updates_and_changes_the_policy(rig):
    session, _, trainer = rig
    before = [p.detach().clone() for p in trainer.model.policy.actor.parameters()]
    updates = trainer.updates
    session.set_training(True).result(TIMEOUT_S)
    state = session.wait_for(lambda s: s.updates >= updates + 4, TIMEOUT_S)
    assert state.training and state.mode == "train" and state.attempts >= 2
    session.set_training(False).result(TIMEOUT_S)
    stopped = session.state()
    assert not stopped.training
    after = list(trainer.model.policy.actor.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    frozen = trainer.updates
    session.plan().result(TIMEOUT_S)  # a command after training: no more updates run in the background
    assert trainer.updates == frozen


def test_correct_and_checkpoint_round_trip(rig, tmp_path):
    session, _, trainer = rig
    session.plan().result(TIMEOUT_S)
    corrected = session.correct().result(TIMEOUT_S)
    state = session.state()
    assert state.corrected is not None and len(state.corrected) == 1
    shift = torch.linalg.norm(
        corrected.position[:, :2] - torch.tensor([state.proposed[0][0]["position"][:2]]), dim=1
    )
    assert float(shift.max()) <= trainer.task.max_shift_xy * 2**0.5 + 1e-6
    written = session.save_checkpoint(tmp_path / "corrector").result(TIMEOUT_S)
    assert written.exists()
    session.load_checkpoint(written).result(TIMEOUT_S)
    again = session.correct().result(TIMEOUT_S)
    torch.testing.assert_close(again.position, corrected.position)


def test_evaluation_mode_keeps_its_own_tally(rig):
    session, _, trainer = rig
    updates = trainer.updates
    session.set_evaluation(True).result(TIMEOUT_S)
    state = session.wait_for(lambda s: s.attempts >= 1, TIMEOUT_S)
    assert state.evaluating and state.mode == "evaluate"
    session.set_evaluation(False).result(TIMEOUT_S)
    assert trainer.updates == updates


def test_a_dead_planner_shows_as_state_and_recovers(rig):
    session, server, _ = rig
    port = server.server.port
    server.stop()
    with pytest.raises(PlannerUnavailable):
        session.plan().result(TIMEOUT_S)
    dead = session.state()
    assert dead.planner_status is PlannerStatus.UNAVAILABLE
    assert "planner unavailable" in dead.message
    revived = _serve(port)
    try:
        session.plan().result(TIMEOUT_S)
        assert session.state().planner_status is PlannerStatus.READY
        assert session.state().proposed
    finally:
        revived.stop()
