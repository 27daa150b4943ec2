"""The web panel in headless Chromium (the system's chromium, driven by Playwright; nothing downloaded).

Screenshots go to ``out/test-artifacts/``.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from dexrl.app import Session, SessionConfig
from dexrl.app.sac_corrector import SacCorrector
from dexrl.gqcnn.policy import FCGQCNNPlanner

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e .[test])"
)

CHROMIUM = next((path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))), None)
ARTIFACTS = Path(__file__).resolve().parents[1] / "out" / "test-artifacts"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_S = 600.0
UI_TIMEOUT_MS = 120_000

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (scripts/setup.sh installs Debian's chromium)"
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def panel(tmp_path_factory, network):
    from dexrl.panel import Panel
    from dexrl.sim.grasp_runner import GraspRunner
    from dexrl.sim.settings import load_scene_settings

    settings = load_scene_settings(
        ["objects.pool_size=4", "objects.count_range=[3,4]"], num_envs=1, seed=4, device="cpu"
    )
    gripper_dir = tmp_path_factory.mktemp("gripper")
    session = Session(
        SessionConfig(settings, planner_name="FC-GQ-CNN (seeded random weights)", top_k=3),
        FCGQCNNPlanner(network),  # a real q-map; seeded weights, not the shipped ones
        trainer=SacCorrector(settings, batch_size=2, seed=0),
        runner_factory=lambda s, p: GraspRunner(s, p, asset_dir=gripper_dir),
    ).start()
    session.wait_for(lambda s: s.depth is not None, TIMEOUT_S)
    app = Panel(session, port=_free_port())
    yield app
    app.close()
    session.close()


@pytest.fixture()
def page(tmp_path):
    with playwright_api.sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1200},
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def _q_image_stats(page) -> dict:
    """Size and pixel spread of the panel's q-map image, read back in the page."""
    return page.evaluate("""() => {
        const images = [...document.querySelectorAll('img')].filter(i => i.naturalWidth >= 64);
        if (!images.length) return {count: 0};
        const img = images[images.length - 1];
        const canvas = document.createElement('canvas');
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        const ctx = canvas.getContext('2d'); ctx.drawImage(img, 0, 0);
        const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
        let colored = 0;
        for (let i = 0; i < data.length; i += 4) {
            if (Math.abs(data[i] - data[i + 1]) > 20 || Math.abs(data[i + 1] - data[i + 2]) > 20) colored++;
        }
        return {count: images.length, width: img.naturalWidth, colored: colored};
    }""")


def test_spawn_plan_and_train_in_the_browser(panel, page):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.goto(panel.url)
    expect = playwright_api.expect
    expect(page.get_by_role("button", name="Spawn bin")).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(page.get_by_text("Planner:")).to_be_visible(timeout=UI_TIMEOUT_MS)
    page.screenshot(path=ARTIFACTS / "panel_loaded.png")

    page.get_by_role("button", name="Spawn bin").click()
    expect(page.get_by_text("spawned")).to_be_visible(timeout=UI_TIMEOUT_MS)
    before = _q_image_stats(page)
    assert before["count"] >= 1 and before["colored"] == 0  # a grey depth image before planning

    page.get_by_role("button", name="Plan").click()
    expect(page.get_by_text("proposed")).to_be_visible(timeout=UI_TIMEOUT_MS)
    state = panel.session.wait_for(lambda s: s.q_map_source != "", TIMEOUT_S)
    assert state.q_map_source == "planner", state.message  # FC-GQ-CNN's own q-map, not the depth stand-in
    page.wait_for_function("() => [...document.querySelectorAll('img')].some(i => i.naturalWidth >= 64)")
    page.wait_for_timeout(1000)  # let the new image decode
    planned = _q_image_stats(page)
    assert planned["colored"] > 100  # the q-map overlay and the jaw glyphs are in colour
    assert panel.glyph_count >= 1  # jaw glyphs drawn in the 3D scene
    for close in page.locator("button.mantine-Notification-closeButton").all():
        close.click()  # the "software WebGL" notice would cover the scene in the screenshot
    page.wait_for_timeout(1000)  # the notice fades out
    page.screenshot(path=ARTIFACTS / "panel_planned.png")

    page.get_by_role("button", name="Start training").click()
    expect(page.get_by_role("button", name="Stop training")).to_be_visible(timeout=UI_TIMEOUT_MS)
    assert panel.session.wait_for(lambda s: s.attempts >= 1, TIMEOUT_S).training
    page.screenshot(path=ARTIFACTS / "panel_training.png")
    page.get_by_role("button", name="Stop training").click()
    expect(page.get_by_role("button", name="Start training")).to_be_visible(timeout=UI_TIMEOUT_MS)
    assert not panel.session.wait_for(lambda s: not s.training, TIMEOUT_S).training
