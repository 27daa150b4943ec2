"""The Isaac Sim extension ``exts/dexrl.ui`` without Isaac Sim: its files compile, its extension.toml is
complete, only ``dexrl_ui.kit`` imports omni, every ``dexrl.app`` call and attribute it uses exists on the real
classes with the signature it uses (found by parsing its source), and its pure parts work on real inputs.

Nothing here runs Kit; ``exts/dexrl.ui/dexrl_ui/kit/tests`` holds the omni.kit.test cases for Isaac Sim.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import inspect
import py_compile
import re
import sys
import threading
import tomllib
from concurrent.futures import Future
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from dexrl.app import PlannerStatus, SceneGeometry, Session, SessionConfig, SessionState
from dexrl.app.drawing import (
    FINGER_HEIGHT,
    bin_outline_segments,
    grasp_segments,
    q_picture,
    rgba,
    status_markdown,
    status_text,
)
from dexrl.sim.scene_cfg import SceneSettingsCfg
from gqcnn_bridge.client import RemotePlanner

ROOT = Path(__file__).resolve().parents[1]
EXT = ROOT / "exts" / "dexrl.ui"
DRAWING = ROOT / "dexrl" / "app" / "drawing.py"
OMNI_ROOTS = {"omni", "carb", "pxr", "isaacsim"}
"""Top-level modules that exist only inside Kit / Isaac Sim."""

if str(EXT) not in sys.path:
    sys.path.insert(0, str(EXT))  # as Kit does: the extension folder on sys.path

from dexrl_ui.launch import LaunchOptions, server_address, start_session
from dexrl_ui.view import (
    CORRECTED_COLOR,
    PROPOSED_COLOR,
    PanelModel,
    StageFrame,
    line_batch,
    to_stage,
)


def _sources() -> list[Path]:
    return sorted(EXT.rglob("*.py"))


def _kit_part(path: Path) -> bool:
    return (EXT / "dexrl_ui" / "kit") in path.parents


def _manifest() -> dict:
    with (EXT / "config" / "extension.toml").open("rb") as file:
        return tomllib.load(file)


# ---------------------------------------------------------------------- files and manifest
def test_every_python_file_compiles(tmp_path):
    sources = _sources()
    assert len(sources) >= 8
    for index, path in enumerate(sources):
        py_compile.compile(str(path), cfile=str(tmp_path / f"{index}.pyc"), doraise=True)


def test_extension_toml_describes_the_extension():
    manifest = _manifest()
    package = manifest["package"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", package["version"])
    for key in ("title", "description", "category"):
        assert package[key].strip(), key
    assert len(package["keywords"]) >= 3
    for key in ("readme", "changelog"):
        assert (EXT / package[key]).is_file(), key
    changelog = (EXT / package["changelog"]).read_text()
    assert f"[{package['version']}]" in changelog
    dependencies = manifest["dependencies"]
    for name in ("omni.ui", "omni.kit.uiapp", "omni.usd", "isaacsim.util.debug_draw"):
        assert name in dependencies, name
    assert "omni.kit.ui_test" in manifest["test"][0]["dependencies"]
    assert all((EXT / page).is_file() for page in manifest["documentation"]["pages"])


def test_python_module_is_the_kit_package_with_its_entry_point_and_tests():
    (module,) = [entry["name"] for entry in _manifest()["python"]["module"]]
    package = EXT.joinpath(*module.split("."))
    assert (package / "__init__.py").is_file()
    init = ast.parse((package / "__init__.py").read_text())
    exported = {
        alias.name for node in ast.walk(init) if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    assert "DexrlUiExtension" in exported  # Kit looks for the IExt subclass in this module
    extension = ast.parse((package / "extension.py").read_text())
    (iext,) = [node for node in ast.walk(extension) if isinstance(node, ast.ClassDef)]
    assert ast.unparse(iext.bases[0]) == "omni.ext.IExt"
    methods = {node.name for node in iext.body if isinstance(node, ast.FunctionDef)}
    assert {"on_startup", "on_shutdown"} <= methods
    tests = package / "tests"  # omni.kit.test imports <python module>.tests
    assert (tests / "__init__.py").is_file() and list(tests.glob("test_*.py"))


def test_top_level_package_is_found_in_the_extension_folder():
    spec = importlib.util.find_spec("dexrl_ui")
    assert spec is not None and Path(spec.origin).parent == EXT / "dexrl_ui"
    # Why not `dexrl.ui`: `dexrl` is a regular package installed from this repository, so a `dexrl/ui`
    # folder inside the extension would never be searched.
    assert importlib.util.find_spec("dexrl.ui") is None


def test_pytest_does_not_collect_the_kit_tests():
    with (ROOT / "pyproject.toml").open("rb") as file:
        testpaths = tomllib.load(file)["tool"]["pytest"]["ini_options"]["testpaths"]
    kit_tests = EXT / "dexrl_ui" / "kit" / "tests"
    assert kit_tests.is_dir()
    assert not any((ROOT / path) in kit_tests.parents for path in testpaths)


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_only_the_kit_package_imports_omni():
    kit_files = [path for path in _sources() if _kit_part(path)]
    assert kit_files
    for path in _sources():
        if not _kit_part(path):
            assert not _imported_roots(path) & OMNI_ROOTS, path
    assert not _imported_roots(DRAWING) & OMNI_ROOTS
    omni_lines = sum(len(path.read_text().splitlines()) for path in kit_files if "tests" not in path.parts)
    assert omni_lines <= 300, f"the omni-specific code grew to {omni_lines} lines"


# ---------------------------------------------------------------------- API contract, found by parsing
RECEIVERS = {"session": "session", "_session": "session", "state": "state", "geometry": "geometry"}
"""Names (variables, or attributes such as ``self.session``) whose methods and attributes are checked, and
which real object they stand for."""


def _receiver(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return RECEIVERS.get(node.id) or ("model" if node.id == "model" else None)
    if isinstance(node, ast.Attribute):
        if node.attr == "_model" and isinstance(node.value, ast.Name) and node.value.id == "self":
            return "model"
        return RECEIVERS.get(node.attr) if node.attr in ("session", "_session") else None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "state":
        return "state" if _receiver(node.func.value) == "session" else None  # session.state().x
    return None


def uses(source: str) -> tuple[list[tuple], list[tuple]]:
    """(calls, chains) in ``source``: calls ``(kind, method, n_positional, keywords, has_star, line)`` on a
    receiver, and attribute chains ``(kind, (attr, ...), line)`` read from one (or methods passed on as
    callbacks, such as a button's ``self._model.plan``)."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    calls, chains = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            kind = _receiver(node.func.value)
            if kind is not None:
                star = any(isinstance(a, ast.Starred) for a in node.args) or any(
                    k.arg is None for k in node.keywords
                )
                keywords = tuple(k.arg for k in node.keywords if k.arg is not None)
                calls.append((kind, node.func.attr, len(node.args), keywords, star, node.lineno))
        parent = parents.get(node)
        if isinstance(parent, ast.Call) and parent.func is node:
            continue  # a call: checked above, with its arguments
        if isinstance(node, ast.Attribute) and not isinstance(parent, ast.Attribute):
            names, inner = [], node
            while isinstance(inner, ast.Attribute) and _receiver(inner) is None:
                names.append(inner.attr)
                inner = inner.value
            kind = _receiver(inner)
            if kind is not None and names:
                chains.append((kind, tuple(reversed(names)), node.lineno))
    return calls, chains


@pytest.fixture(scope="module")
def real():
    """Real instances of what the receivers stand for (a Session is only constructed, never started)."""
    geometry = SceneGeometry(
        env_origins=np.zeros((2, 3)),
        interior_size=(0.3, 0.2),
        floor_z=0.05,
        wall_height=0.1,
        wall_thickness=0.01,
        camera_positions=np.zeros((2, 3)),
        pool_size=8,
    )
    grasp = {"position": [0.0, 0.0, 0.1], "yaw": 0.0, "width": 0.05, "q": 0.5}
    grasp |= {"center": [10.0, 10.0], "angle": 0.0, "width_px": 8.0}
    state = SessionState(
        geometry=geometry,
        depth=np.ones((2, 4, 4), np.float32),
        points=np.zeros((2, 3, 3), np.float32),
        q_map=np.zeros((2, 2, 2), np.float32),
        proposed=[[grasp], [grasp]],
        corrected=[grasp, grasp],
        executed=[grasp, grasp],
        last_outcome=["success", "slip"],
    )
    session = Session(SessionConfig(SceneSettingsCfg()), planner=None)
    return {"session": session, "state": state, "geometry": geometry, "model": PanelModel()}


def contract_errors(source: str, real: dict) -> list[str]:
    """What in ``source`` does not exist on the real objects, or does not bind to the real signature."""
    calls, chains = uses(source)
    errors = []
    for kind, method, n_args, keywords, star, line in calls:
        target = getattr(real[kind], method, None)
        if not callable(target):
            errors.append(f"line {line}: {kind}.{method} is not a method of {type(real[kind]).__name__}")
        elif not star:
            try:
                inspect.signature(target).bind(*[None] * n_args, **dict.fromkeys(keywords))
            except TypeError as error:
                errors.append(f"line {line}: {kind}.{method}({n_args} args, {keywords}): {error}")
    for kind, names, line in chains:
        value = real[kind]
        for depth, name in enumerate(names):
            if not hasattr(value, name):
                errors.append(f"line {line}: {kind}.{'.'.join(names[: depth + 1])} does not exist")
                break
            value = getattr(value, name)
    return errors


def _named_callables(path: Path, source: str) -> dict[str, object]:
    """Names imported from dexrl, gqcnn_bridge or the extension's pure modules, resolved to the real objects."""
    package = "dexrl_ui." + ".".join(path.relative_to(EXT / "dexrl_ui").parent.parts)
    resolved = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom):
            continue
        module = importlib.util.resolve_name("." * node.level + (node.module or ""), package.rstrip("."))
        if module.split(".")[0] in {"dexrl", "gqcnn_bridge", "dexrl_ui"} and not module.startswith(
            "dexrl_ui.kit"
        ):
            imported = importlib.import_module(module)
            resolved |= {alias.asname or alias.name: getattr(imported, alias.name) for alias in node.names}
    return resolved


def test_every_call_and_attribute_the_extension_uses_exists_with_its_signature(real):
    seen, errors = set(), []
    for path in [*_sources(), DRAWING]:
        source = path.read_text()
        errors += [f"{path.relative_to(ROOT)} {error}" for error in contract_errors(source, real)]
        calls, chains = uses(source)
        seen |= {(kind, method) for kind, method, *_ in calls} | {
            (kind, names[0]) for kind, names, _ in chains
        }
        if path == DRAWING:
            continue
        named = _named_callables(path, source)  # Session(...), SessionConfig(...), LaunchOptions(...), ...
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in named:
                if any(isinstance(a, ast.Starred) for a in node.args) or any(
                    k.arg is None for k in node.keywords
                ):
                    continue
                keywords = dict.fromkeys(k.arg for k in node.keywords)
                try:
                    inspect.signature(named[node.func.id]).bind(*[None] * len(node.args), **keywords)
                except TypeError as error:
                    errors.append(f"{path.relative_to(ROOT)} line {node.lineno}: {node.func.id}: {error}")
    assert not errors, "\n".join(errors)
    # The scan must see the panel's whole command set (called, or handed to a button), else it checks nothing.
    commands = {"spawn", "plan", "correct", "execute", "set_training", "set_evaluation", "state", "close"}
    assert {("session", name) for name in commands | {"save_checkpoint", "load_checkpoint"}} <= seen
    window_actions = {"start", "stop", "spawn", "plan", "correct", "execute", "toggle_training", "select"}
    assert {("model", name) for name in window_actions} <= seen


def test_the_contract_check_catches_renames(real):
    broken = """
session.spwan(count=1)
session.spawn(count=1, depth_noise=True)
session.plan(1)
state = session.state()
x = state.q_mapp
y = session.config.settings.objects.pool
self._model.toggle_train()
"""
    errors = contract_errors(broken, real)
    assert len(errors) == 6, errors
    for fragment in (
        "session.spwan",
        "depth_noise",
        "session.plan",
        "state.q_mapp",
        "objects.pool",
        "toggle_train",
    ):
        assert any(fragment in error for error in errors), fragment


def test_real_classes_are_what_the_panel_expects():
    state_fields = {f.name for f in fields(SessionState)}
    assert {
        "version",
        "depth",
        "q_map",
        "proposed",
        "corrected",
        "points",
        "training",
        "evaluating",
    } <= state_fields
    assert set(inspect.signature(Session.spawn).parameters) == {"self", "count", "seed", "noise", "randomize"}


# ---------------------------------------------------------------------- pure helpers on real inputs
def test_rgba_layout_for_byte_image_provider():
    grey = np.arange(6, dtype=np.uint8).reshape(2, 3)
    out = rgba(grey)
    assert out.shape == (2, 3, 4) and out.flags.c_contiguous
    assert (out[..., 0] == grey).all() and (out[..., 2] == grey).all() and (out[..., 3] == 255).all()
    rgb = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    assert (rgba(rgb)[..., :3] == rgb).all()
    assert len(rgba(rgb).tobytes()) == 5 * 7 * 4  # what ByteImageProvider reads for sizes [7, 5]
    with pytest.raises(TypeError):
        rgba(np.zeros((2, 2), np.float32))


def _planned_state() -> SessionState:
    """A snapshot as the session publishes after Plan: a 120 x 160 depth image of a 4 cm block on a floor,
    the FC-GQ-CNN grid (stride 4, offset 48), one good grasp on the block."""
    depth = np.full((1, 120, 160), 0.70, np.float32)
    depth[0, 40:80, 60:100] = 0.66
    q_map = np.zeros((1, 7, 17), np.float32)
    q_map[0, 3, 6] = 1.0  # the cell centred on pixel (48 + 4 * 6, 48 + 4 * 3) = (72, 60)
    grasp = {"position": [0.1, 0.2, 0.04], "yaw": 0.5, "width": 0.05, "q": 0.9}
    grasp |= {"center": [80.0, 60.0], "angle": 0.0, "width_px": 30.0}
    return SessionState(
        version=7,
        geometry=SceneGeometry(np.array([[1.0, 2.0, 0.0]]), (0.3, 0.2), 0.05, 0.1, 0.01, np.zeros((1, 3)), 8),
        depth=depth,
        points=np.array([[[1.0, 2.0, 0.05], [1.0, 2.0, 0.09], [1.0, 2.0, 0.09]]], np.float32),
        q_map=q_map,
        q_map_source="planner",
        q_map_grid=(4, 48),
        proposed=[[grasp]],
        corrected=[grasp | {"position": [0.11, 0.2, 0.04]}],
        attempts=20,
        successes=5,
        success_ci=(0.11, 0.47),
        attempts_per_s=1.25,
        planner_status=PlannerStatus.READY,
        planner_name="remote ws://127.0.0.1:8765",
        message="planned up to 5 grasps per env",
    )


def test_q_picture_shows_the_q_map_and_grasps_as_rgba():
    state = _planned_state()
    before = rgba(q_picture(SessionState(depth=state.depth), 0))
    assert before.shape == (120, 160, 4) and (before[..., 0] == before[..., 1]).all()  # depth in grey
    after = rgba(q_picture(state, 0))
    assert after.shape == (120, 160, 4)
    high_q = after[60, 72, :3].astype(int)
    assert abs(high_q[0] - high_q[2]) > 40  # coloured where q = 1 (inferno), grey elsewhere
    assert (after[5, 5, :3] == before[5, 5, :3]).all()


def test_grasp_segments_are_jaw_glyphs_at_the_grasp():
    grasp = {"position": [0.1, 0.2, 0.04], "yaw": np.pi / 2, "width": 0.06}
    segments = grasp_segments([grasp])
    assert segments.shape == (6, 2, 3)
    closing = segments[0]  # from one jaw to the other, along the yaw
    np.testing.assert_allclose(closing.mean(0), grasp["position"], atol=1e-6)
    np.testing.assert_allclose(closing[1] - closing[0], [0.0, 0.06, 0.0], atol=1e-6)
    assert np.isclose(segments[:, :, 2].max(), 0.04 + FINGER_HEIGHT)
    assert grasp_segments([]).shape == (0, 2, 3)


def test_bin_outline_is_the_inside_box():
    edges = bin_outline_segments((0.3, 0.2), floor_z=0.05, wall_height=0.1)
    assert edges.shape == (12, 2, 3)
    lengths = np.sort(np.linalg.norm(edges[:, 1] - edges[:, 0], axis=1))
    np.testing.assert_allclose(lengths, [0.1] * 4 + [0.2] * 4 + [0.3] * 4, atol=1e-6)
    assert np.isclose(edges[..., 2].min(), 0.05) and np.isclose(edges[..., 2].max(), 0.15)


def test_stage_conversion_and_line_batches():
    world = np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_allclose(to_stage(world, StageFrame()), world)
    np.testing.assert_allclose(to_stage(world, StageFrame(0.01, "Z")), [[100.0, 200.0, 300.0]])
    np.testing.assert_allclose(to_stage(world, StageFrame(1.0, "Y")), [[1.0, 3.0, -2.0]])
    lines = line_batch(
        np.array([[[0, 0, 0], [1, 0, 0]], [[0, 1, 0], [0, 1, 1]]]), (1, 0, 0, 1), 2.0, StageFrame()
    )
    assert lines.starts == [(0.0, 0.0, 0.0), (0.0, 1.0, 0.0)] and lines.ends[1] == (0.0, 1.0, 1.0)
    assert lines.colors == [(1, 0, 0, 1)] * 2 and lines.widths == [2.0, 2.0]


def test_status_text_reports_planner_and_statistics():
    state = _planned_state()
    text = status_text(state, 0)
    for expected in (
        "Planner: ready (remote ws://127.0.0.1:8765)",
        "Q-map: planner",
        "Grasps shown: 1 proposed, corrected",
        "Success: 25.0% [11.0, 47.0] (5/20)",
        "Attempts/s: 1.25 - SAC updates: 0",
        "Message: planned up to 5 grasps per env",
    ):
        assert expected in text.splitlines(), expected
    assert "**Planner:** ready" in status_markdown(state, 0)
    assert "Success: n/a (0/0)" in status_text(SessionState(), 0)


# ---------------------------------------------------------------------- the panel model
class _FakeLaunched:
    """Stands in for a launched session in PanelModel tests that need no simulator."""

    def __init__(self, state: SessionState):
        settings = SceneSettingsCfg()
        settings.num_envs = 1
        self.session = Session(SessionConfig(settings), planner=None)
        self.session._state = state  # a published snapshot, as the worker would leave it
        self.notes = ["started a highest-object planner server at ws://127.0.0.1:1"]
        self.closed = threading.Event()

    def close(self, timeout_s: float = 30.0) -> None:
        self.closed.set()


def test_panel_model_polls_without_redrawing_the_same_snapshot():
    launched = _FakeLaunched(_planned_state())
    model = PanelModel(starter=lambda options: launched, min_interval_s=0.1)
    first = model.poll(0.0)
    assert first is not None and not first.running and "no session" in first.status
    assert model.start(LaunchOptions(envs=1)).result(5) is launched
    update = model.poll(1.0)
    assert update.running and update.image.shape == (120, 160, 4) and update.image.dtype == np.uint8
    assert "Env 0 of 1" in update.status and launched.notes[0] in update.status
    assert update.lines.colors.count(PROPOSED_COLOR) == 6 and update.lines.colors.count(CORRECTED_COLOR) == 6
    assert len(update.lines.starts) == 12 + 6 + 6  # bin outline, one proposed and one corrected glyph
    assert len(update.points.points) == 2  # the padding repeats are drawn once
    assert update.lines.starts[0][0] > 0.5  # world frame: the env origin is at x = 1 m
    centimetres = StageFrame(0.01, "Z")
    launched.session._state = dataclasses.replace(launched.session.state(), version=8, message="next")
    assert model.poll(1.05, centimetres) is None  # changed, but only 50 ms after the last update (at 1 s)
    update = model.poll(1.2, centimetres)
    assert update is not None and "Message: next" in update.status
    assert update.lines.starts[0][0] > 50  # now in centimetres
    assert model.poll(5.0, centimetres) is None  # same snapshot: nothing to redraw, however long after
    assert model.select(5) == 0  # one env
    model.stop().result(5)
    assert launched.closed.is_set() and model.session is None


def test_panel_model_commands_without_a_session_do_nothing():
    model = PanelModel()
    assert model.controls() is None
    for command in (model.plan, model.correct, model.execute, model.toggle_training, model.toggle_evaluation):
        assert command() is None
    assert model.spawn(3, 0, False, True) is None and model.stop() is None


def test_closing_while_a_session_starts_closes_it_once_started():
    launched = _FakeLaunched(SessionState())
    release = threading.Event()

    def slow_start(options):
        release.wait(5)
        return launched

    model = PanelModel(starter=slow_start)
    assert model.start(LaunchOptions()) is not None
    model.close(timeout_s=0.01)  # extension shutdown while the start still runs
    assert not launched.closed.is_set()
    release.set()
    assert launched.closed.wait(5) and model.session is None


def test_start_session_plans_through_a_local_bridge_server():
    """Everything up to the simulator: settings, a local highest-object server on a free port, the remote
    planner connected to it, the Session's worker (here with a simulator that fails to build)."""

    def no_simulator(settings, planner):
        raise RuntimeError("no simulator in this test")

    options = LaunchOptions(
        envs=1, device="cpu", planner_url="ws://127.0.0.1:0", server_planner="highest-object", trainer=False
    )
    launched = start_session(options, runner_factory=no_simulator)
    try:
        assert isinstance(launched.planner, RemotePlanner)
        assert launched.planner.server_info.model_id == "highest-object"
        assert launched.server.url == launched.planner.url and launched.planner_name.startswith(
            "remote ws://"
        )
        state = launched.session.wait_for(lambda s: s.busy == "stopped", 30)
        assert "no simulator in this test" in state.message and state.planner_status is PlannerStatus.ERROR
        assert launched.session.config.settings.num_envs == 1 and launched.session.trainer is None
    finally:
        launched.close()
    with pytest.raises(ValueError, match="ws://host:port"):
        server_address("http://127.0.0.1")


def test_start_errors_show_in_the_status():
    def broken(options):
        raise ValueError("planner URL must look like ws://host:port")

    model = PanelModel(starter=broken, min_interval_s=0.0)
    future: Future = model.start(LaunchOptions())
    with pytest.raises(ValueError):
        future.result(5)
    update = model.poll(1.0)
    assert not update.running and "failed to start" in update.status and "ws://host:port" in update.status


@pytest.mark.sim
def test_panel_model_drives_a_real_session(tmp_path):
    """The whole panel below omni.ui: Start (a local highest-object server, 1 env on the CPU, the kit-less
    simulator), Spawn bin, Plan, Execute, each through the model, and the updates the window would show."""
    from dexrl.sim.grasp_runner import GraspRunner

    def starter(options: LaunchOptions):
        return start_session(options, runner_factory=lambda s, p: GraspRunner(s, p, asset_dir=tmp_path))

    model = PanelModel(starter=starter, min_interval_s=0.0)
    options = LaunchOptions(
        envs=1,
        device="cpu",
        overrides="objects.pool_size=4 objects.count_range=[3,4]",
        planner_url="ws://127.0.0.1:0",
        server_planner="highest-object",
        trainer=False,
        top_k=3,
    )
    launched = model.start(options).result(300)
    try:
        launched.session.wait_for(lambda s: s.geometry is not None and s.depth is not None, 600)
        assert model.controls().pool_size == 4 and model.controls().envs == 1
        model.spawn(3, 5, False, False).result(600)
        model.plan().result(600)
        update = model.poll(1.0)
        state = launched.session.state()
        assert update.running and state.proposed[0]
        assert update.image.shape == (*state.depth.shape[1:], 4)
        grasp_lines = update.lines.colors.count(PROPOSED_COLOR)
        assert grasp_lines == 6 * len(state.proposed[0]) and len(update.points.points) > 100
        assert "Planner: ready" in update.status and "depth stand-in" in update.status
        model.execute().result(600)
        update = model.poll(2.0)
        assert "Success:" in update.status and launched.session.state().attempts == 1
    finally:
        model.stop().result(120)
