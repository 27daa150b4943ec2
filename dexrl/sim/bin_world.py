"""The randomized bin world: a kit-less Isaac Lab scene of N envs, each a tote on a table with an overhead
depth camera and a pool of objects of which a random subset is dropped into the bin every round.

All envs advance together; every per-env quantity is a tensor with a leading ``num_envs`` dimension.
Quaternions follow Isaac Lab 3.0: (x, y, z, w).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

import isaaclab.sim as sim_utils
from isaaclab.assets import AssetBaseCfg, RigidObjectCfg, RigidObjectCollectionCfg
from isaaclab.scene import InteractiveScene, InteractiveSceneCfg
from isaaclab.sensors import CameraCfg
from isaaclab.utils.math import quat_from_matrix
from isaaclab_newton.physics import MJWarpSolverCfg, NewtonCfg
from isaaclab_newton.renderers import NewtonWarpRendererCfg

from dexrl.grasp import CameraExtrinsics, look_at_rotation

from . import randomization
from .cpu_graph import use_cpu_step_graph
from .overflow import OverflowWatch
from .scene_cfg import SceneSettingsCfg

__all__ = ["BinWorld", "PoolObject", "RoundInfo", "build_scene_cfg", "simulation_cfg"]

PARK_Z = -0.6
"""Height of the parking spots, under the table and out of the camera's view, where unused pool objects wait [m].
A parked object is held in place by a force equal to its weight, apart from everything else: it makes no
contacts, so it costs the solver no constraint rows (resting on a shelf, the parked objects made about half
of all contacts)."""

PARK_SPACING = 0.16
"""Distance between parking spots [m]: more than the diameter of the largest object of the built-in sets (0.12 m)
plus contact margins, so that their parked objects never touch (larger custom objects would touch, at a cost in
contacts, but stay held)."""

MAX_REDRAWS = 3
"""How often a heap whose physics failed while settling is drawn again."""

HEAP_MAX_SPEED = 20.0
"""An object faster than this while a heap settles means its physics failed [m/s] (dropped objects reach ~1 m/s;
a heap that blows up passes 1e10 m/s before it turns non-finite)."""

FLOOR_EXTRA_DEPTH = 0.05
"""How far the bin floor's collider extends below the table top [m]."""


@dataclass(frozen=True)
class PoolObject:
    """One slot of the per-env object pool.

    Attributes:
        name: unique name of the shape in its object set.
        spawn: the Isaac Lab spawner cfg (geometry, collision, default mass).
        extent: axis-aligned size of the shape in its own frame (x, y, z) [m].
    """

    name: str
    spawn: sim_utils.SpawnerCfg
    extent: tuple[float, float, float]

    @property
    def radius(self) -> float:
        """Bounding-sphere radius about the body origin [m] (origin at the shape centre)."""
        return 0.5 * math.sqrt(sum(e * e for e in self.extent))


@dataclass
class RoundInfo:
    """What was drawn for one round, per env (tensors on the world's device).

    Attributes:
        placed: (N, P) bool, which pool objects are in the bin.
        mass: (N, P) [kg]. static_friction, dynamic_friction, restitution: (N, P).
        settle_time: (N,) simulated seconds until the env came to rest (the timeout if it did not).
        settled: (N,) bool, False where the timeout was reached first.
    """

    placed: torch.Tensor
    mass: torch.Tensor
    static_friction: torch.Tensor
    dynamic_friction: torch.Tensor
    restitution: torch.Tensor
    settle_time: torch.Tensor = field(default=None)
    settled: torch.Tensor = field(default=None)


@dataclass
class _HeapsComingToRest:
    """Heaps that have not come to rest yet (dropped by :meth:`BinWorld.begin_round`, or disturbed and waited for
    by :meth:`BinWorld.begin_rest`), one row per env."""

    env_ids: torch.Tensor  # (m,) long
    drawn: torch.Tensor  # (m,) bool: a new heap, whose round records its settling; False: a disturbed heap
    dropped_step: torch.Tensor  # (m,) long, BinWorld.steps_taken at the (last) drop or disturbance
    since_step: torch.Tensor  # (m,) long, start of the current motion check
    since_pos: torch.Tensor  # (m, P, 3) world positions then [m]
    since_quat: torch.Tensor  # (m, P, 4)
    redraws: torch.Tensor  # (m,) long
    timeout: torch.Tensor  # (m,) [s]

    @classmethod
    def none(cls, pool_size: int, device) -> _HeapsComingToRest:
        long = torch.zeros(0, dtype=torch.long, device=device)
        return cls(
            long, torch.zeros(0, dtype=torch.bool, device=device), long, long,
            torch.zeros(0, pool_size, 3, device=device), torch.zeros(0, pool_size, 4, device=device), long,
            torch.zeros(0, device=device),
        )

    @classmethod
    def started(cls, world: BinWorld, env_ids: torch.Tensor, drawn: bool, timeout: float) -> _HeapsComingToRest:
        now = torch.full_like(env_ids, world.steps_taken)
        return cls(
            env_ids, torch.full((len(env_ids),), drawn, device=env_ids.device), now, now.clone(),
            world.objects.data.body_pos_w.torch[env_ids].clone(), world.objects.data.body_quat_w.torch[env_ids].clone(),
            torch.zeros_like(env_ids), torch.full((len(env_ids),), float(timeout), device=env_ids.device),
        )

    def joined(self, other: _HeapsComingToRest) -> _HeapsComingToRest:
        return _HeapsComingToRest(*(torch.cat((a, b)) for a, b in zip(vars(self).values(), vars(other).values())))

    def subset(self, rows: torch.Tensor) -> _HeapsComingToRest:
        return _HeapsComingToRest(*(value[rows] for value in vars(self).values()))


def _static_box(prim_path: str, size, pos, color=(0.6, 0.6, 0.6)) -> AssetBaseCfg:
    """A static cuboid collider (collision API, no rigid body: Newton attaches it to the world)."""
    return AssetBaseCfg(
        prim_path=prim_path,
        spawn=sim_utils.CuboidCfg(
            size=tuple(size),
            collision_props=sim_utils.UsdPhysicsCollisionCfg(),
            visual_material=sim_utils.PreviewSurfaceCfg(diffuse_color=color),
        ),
        init_state=AssetBaseCfg.InitialStateCfg(pos=tuple(pos)),
    )


def park_positions(pool_size: int) -> torch.Tensor:
    """Env-local (x, y) parking spots under the table, (P, 2) [m]."""
    columns = math.ceil(math.sqrt(pool_size))
    index = torch.arange(pool_size)
    x = (index % columns - (columns - 1) / 2) * PARK_SPACING
    y = (index // columns - (columns - 1) / 2) * PARK_SPACING
    return torch.stack((x, y), dim=-1)


def build_scene_cfg(settings: SceneSettingsCfg, pool: list[PoolObject], extras: dict | None = None) -> InteractiveSceneCfg:
    """Compose the Isaac Lab scene cfg: table, tote, object pool (parked under the table), camera, plus ``extras``
    (e.g. the gripper articulation and its contact sensor)."""
    bin_cfg, cam = settings.bin, settings.camera
    length, width = bin_cfg.interior_size
    t, h = bin_cfg.wall_thickness, bin_cfg.wall_height
    table_x, table_y, table_z = bin_cfg.table_size
    cfg = InteractiveSceneCfg(num_envs=settings.num_envs, env_spacing=settings.env_spacing, replicate_physics=True)
    cfg.table = _static_box("{ENV_REGEX_NS}/Table", bin_cfg.table_size, (0.0, 0.0, -table_z / 2), (0.45, 0.35, 0.25))
    # The floor's collider reaches well below its top (into the static table): objects landing at 2 m/s
    # move ~2 cm per step, and a thin slab let them pass through (the contact normal flips past its middle).
    floor_depth = bin_cfg.floor_thickness + FLOOR_EXTRA_DEPTH
    cfg.bin_floor = _static_box(
        "{ENV_REGEX_NS}/Bin/Floor", (length + 2 * t, width + 2 * t, floor_depth), (0, 0, bin_cfg.floor_z - floor_depth / 2)
    )
    wall_z = bin_cfg.floor_z + h / 2
    cfg.bin_wall_xp = _static_box("{ENV_REGEX_NS}/Bin/WallXp", (t, width + 2 * t, h), ((length + t) / 2, 0, wall_z))
    cfg.bin_wall_xn = _static_box("{ENV_REGEX_NS}/Bin/WallXn", (t, width + 2 * t, h), (-(length + t) / 2, 0, wall_z))
    cfg.bin_wall_yp = _static_box("{ENV_REGEX_NS}/Bin/WallYp", (length, t, h), (0, (width + t) / 2, wall_z))
    cfg.bin_wall_yn = _static_box("{ENV_REGEX_NS}/Bin/WallYn", (length, t, h), (0, -(width + t) / 2, wall_z))
    spots = park_positions(len(pool))
    cfg.objects = RigidObjectCollectionCfg(
        rigid_objects={
            f"obj_{i:02d}": RigidObjectCfg(
                prim_path=f"{{ENV_REGEX_NS}}/Pool/obj_{i:02d}",
                spawn=item.spawn,
                init_state=RigidObjectCfg.InitialStateCfg(pos=(float(spots[i, 0]), float(spots[i, 1]), PARK_Z)),
            )
            for i, item in enumerate(pool)
        }
    )
    k = cam.intrinsics
    cfg.camera = CameraCfg(
        prim_path="{ENV_REGEX_NS}/DepthCamera",
        data_types=["distance_to_image_plane"],
        width=k.width,
        height=k.height,
        spawn=sim_utils.PinholeCameraCfg(
            clipping_range=(cam.near, cam.far),
            # The OpenCV calibration keeps the off-centre principal point (a plain pinhole cfg centres it).
            # Newton's ray field measures pixels from the image corner, OpenCV from the centre of pixel
            # (0, 0): hence the half pixel.
            distortion=sim_utils.OpenCvPinholeDistortionCfg(
                fx=k.fx, fy=k.fy, cx=k.cx + 0.5, cy=k.cy + 0.5, image_size=(k.width, k.height),
                apply_lens_distortion=False,
            ),
        ),
        renderer_cfg=NewtonWarpRendererCfg(use_cuda_graph=settings.physics.use_cuda_graph),
        update_latest_camera_pose=True,
    )
    for name, entity in (extras or {}).items():
        setattr(cfg, name, entity)
    return cfg


def _check_pool(settings: SceneSettingsCfg, pool: list[PoolObject]) -> None:
    settings.check()
    if len(pool) != settings.objects.pool_size:
        raise ValueError(f"the pool has {len(pool)} objects, settings.objects.pool_size is {settings.objects.pool_size}")


def simulation_cfg(settings: SceneSettingsCfg) -> sim_utils.SimulationCfg:
    """The simulation cfg of a bin world: time step, device and the Newton physics of :func:`physics_cfg`."""
    return sim_utils.SimulationCfg(dt=settings.physics.dt, device=settings.device, physics=physics_cfg(settings))


def physics_cfg(settings: SceneSettingsCfg) -> NewtonCfg:
    """Newton + MuJoCo-Warp settings for grasping in clutter."""
    p = settings.physics
    njmax, nconmax = settings.physics_buffers()
    return NewtonCfg(
        solver_cfg=MJWarpSolverCfg(
            solver=p.solver,
            integrator="implicitfast",
            njmax=njmax,
            nconmax=nconmax,
            iterations=p.solver_iterations,
            ls_iterations=p.ls_iterations,
            cone=p.cone,
            impratio=p.impratio,
            use_mujoco_contacts=p.use_mujoco_contacts,
        ),
        num_substeps=1,
        use_cuda_graph=p.use_cuda_graph and settings.device.startswith("cuda"),
    )


class BinWorld:
    """N randomized bins with overhead depth cameras, stepped together.

    Args:
        settings: scene settings (validated here).
        pool: the shapes of the per-env object pool (the same P shapes in every env).
        extras: additional scene entities (name -> cfg), e.g. a gripper.
    """

    def __init__(self, settings: SceneSettingsCfg, pool: list[PoolObject], extras: dict | None = None):
        _check_pool(settings, pool)
        sim_utils.SimulationContext.clear_instance()
        sim = sim_utils.SimulationContext(simulation_cfg(settings))
        scene = InteractiveScene(build_scene_cfg(settings, pool, extras))
        sim.reset()
        self._bind(settings, pool, sim, scene)

    @classmethod
    def attach(
        cls, settings: SceneSettingsCfg, pool: list[PoolObject], sim: sim_utils.SimulationContext, scene: InteractiveScene
    ) -> BinWorld:
        """A world over a simulation and scene that someone else built and started (e.g. an Isaac Lab env
        from :func:`simulation_cfg` and :func:`build_scene_cfg`)."""
        _check_pool(settings, pool)
        world = cls.__new__(cls)
        world._bind(settings, pool, sim, scene)
        return world

    def _bind(self, settings, pool, sim, scene) -> None:
        self.settings = settings
        self.pool = pool
        self.device = torch.device(settings.device)
        self.generator = torch.Generator(device="cpu").manual_seed(settings.seed)
        self.sim = sim
        self.scene = scene
        if self.device.type == "cpu":
            use_cpu_step_graph(sim.physics_manager, settings.physics.use_cpu_graph)
        self.objects = self.scene["objects"]
        self.camera = self.scene["camera"]
        self.num_envs = settings.num_envs
        self.env_origins = self.scene.env_origins.clone()
        self.dt = self.sim.get_physics_dt()
        self.overflow = OverflowWatch(sim.physics_manager, self.num_envs, self.device)
        # Called before every physics step, e.g. a grasp executor's state machine while it streams attempts.
        self.pre_step_callbacks: list[Callable[[], None]] = []
        self._park_pose = self._parking_poses()
        self.extrinsics = self._aim_cameras()
        self.pool_shapes = self._pool_shape_index()
        self._default_mass = self.objects.data.body_mass.torch.clone()
        self._default_inertia = self.objects.data.body_inertia.torch.clone()
        all_envs = torch.arange(self.num_envs, device=self.device)
        self._hold_parked(all_envs, torch.zeros(self.num_envs, len(pool), dtype=torch.bool, device=self.device))
        self.round: RoundInfo | None = None
        self.heap_faults = 0
        self.steps_taken = 0  # physics steps since the world was built
        self._resting = _HeapsComingToRest.none(len(self.pool), self.device)

    # ------------------------------------------------------------------ geometry
    @property
    def interior_bounds(self) -> torch.Tensor:
        """Env-local bin interior as (x_min, x_max, y_min, y_max, z_floor, z_top) [m]."""
        b = self.settings.bin
        length, width = b.interior_size
        return torch.tensor([-length / 2, length / 2, -width / 2, width / 2, b.floor_z, b.floor_z + b.wall_height])

    def _pool_shape_index(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(shape ids, env, pool slot) of every collision shape of the pool objects, from the model's labels."""
        model = self.sim.physics_manager.get_model()
        pattern = re.compile(r"env_(\d+)/Pool/obj_(\d+)$")
        owner = [pattern.search(label) for label in model.body_label]
        shape_body = model.shape_body.numpy()
        ids, envs, slots = [], [], []
        for shape, body in enumerate(shape_body):  # once, at start-up
            match = owner[body] if body >= 0 else None
            if match:
                ids.append(shape)
                envs.append(int(match.group(1)))
                slots.append(int(match.group(2)))
        return torch.tensor(ids), torch.tensor(envs), torch.tensor(slots)

    def _parking_poses(self) -> torch.Tensor:
        spots = park_positions(len(self.pool))
        pose = torch.zeros(len(self.pool), 7)
        pose[:, :2] = spots
        pose[:, 2] = PARK_Z
        pose[:, 6] = 1.0
        return pose.to(self.device)

    def _aim_cameras(self) -> CameraExtrinsics:
        cam = self.settings.camera
        targets = self.env_origins.clone()
        targets[:, 2] = self.settings.bin.floor_z
        eyes = targets.clone()
        eyes[:, 2] += cam.height_above_floor
        # The image's "up" is world +Y: image columns run along +X, rows along -Y. The pose is set from our
        # rotation in the ROS/OpenCV convention: a look-at from straight above is degenerate for Z-up look-at.
        rotation = look_at_rotation(eyes, targets, up=(0.0, 1.0, 0.0))
        self.camera.set_world_poses(positions=eyes, orientations=quat_from_matrix(rotation), convention="ros")
        return CameraExtrinsics(position=eyes, rotation=rotation)

    # ------------------------------------------------------------------ stepping
    def step(self, steps: int = 1) -> None:
        """Advance physics by ``steps`` steps for all envs, each after the :attr:`pre_step_callbacks`."""
        for _ in range(steps):
            for callback in self.pre_step_callbacks:
                callback()
            self.scene.write_data_to_sim()
            self.sim.step(render=False)
            self.overflow.after_step()
            self.scene.update(self.dt)
            self.steps_taken += 1

    # ------------------------------------------------------------------ rounds
    def new_round(self, env_ids: torch.Tensor | None = None, timeout: float | None = None) -> RoundInfo:
        """Draw a new heap in the given envs (all by default): choose K objects, randomize them, drop them
        over the bin with random SO(3) orientations, park the others, then settle. Returns what was drawn.

        A heap whose physics fails while settling (a non-finite state, an object faster than
        ``HEAP_MAX_SPEED``, or an object thrown out of the bin) is drawn again at once, while the other heaps
        settle on, up to ``MAX_REDRAWS`` times per env, with the articulations of its env (e.g. the gripper,
        which a heap that blows up takes along) back at their default joint state; ``self.heap_faults``
        counts those redraws. A heap still moving at the timeout is kept, with ``settled`` False.

        Args:
            env_ids: the envs to re-draw (all by default).
            timeout: simulated seconds a heap may take to come to rest; ``settings.settle.timeout`` by
                default (the grasp executor passes the shorter ``settings.settle.redraw_timeout``).
        """
        ids = torch.arange(self.num_envs, device=self.device) if env_ids is None else env_ids.to(self.device)
        redraws = torch.zeros(len(ids), dtype=torch.long, device=self.device)
        self._reset_articulations(ids, only_nonfinite=True)
        rows = torch.arange(len(ids), device=self.device)
        while True:
            sub, sub_redraws = ids[rows], redraws[rows]
            placed = self._drop(sub)
            settle_time, settled, _ = self._settle(sub, placed, timeout, redraws=sub_redraws)
            redraws[rows] = sub_redraws
            self.round.settle_time[sub] = settle_time
            self.round.settled[sub] = settled
            # A heap can also come to rest in a faulty state (e.g. an object on a wall top, outside the bin).
            again = self.faulty_envs(HEAP_MAX_SPEED)[ids] & (redraws < MAX_REDRAWS)
            if not bool(again.any()):
                break
            rows = again.nonzero().flatten()
            redraws[rows] += 1
            self.heap_faults += len(rows)
            self._reset_articulations(ids[rows])
        return RoundInfo(**{name: value[ids].clone() for name, value in vars(self.round).items()})

    def begin_round(self, env_ids: torch.Tensor, timeout: float | None = None) -> None:
        """Draw and drop new heaps in ``env_ids`` without stepping: they come to rest while the world steps for
        other reasons (e.g. attempts streamed in the other envs), and :meth:`rested_rounds` says when. Until
        then, do not act in those envs. The same tests as :meth:`new_round`: at rest once no placed object moved
        faster than the settle speeds over ``settle.quiet_time``; a heap whose physics fails is drawn again (at
        most ``MAX_REDRAWS`` times); one still moving after ``timeout`` (default ``settle.redraw_timeout``) is
        kept, with ``settled`` False. A heap dropped here that is still coming to rest may not be dropped on
        again (ValueError); the wait for one from :meth:`begin_rest` is replaced.
        """
        ids = env_ids.to(self.device)
        if bool(torch.isin(ids, self._resting.env_ids[self._resting.drawn]).any()):
            raise ValueError("begin_round: some of these envs are still coming to rest")
        self._reset_articulations(ids, only_nonfinite=True)
        self._drop(ids)
        self._wait_for_rest(ids, True, self.settings.settle.redraw_timeout if timeout is None else timeout)

    def begin_rest(self, env_ids: torch.Tensor) -> None:
        """Wait for the heaps of ``env_ids`` to come to rest after something disturbed them (a grasp attempt: an
        object that slipped from the fingers falls back, objects the fingers pushed roll on), with the tests of
        :meth:`begin_round` but no new drop; their rounds' records stay. A heap already coming to rest starts
        its check again. Until :meth:`coming_to_rest` says otherwise, do not observe or act in those envs: an
        object that lost its support may not have started to fall, so the check watches the heap for at least
        ``settle.quiet_time``.
        """
        self._wait_for_rest(env_ids.to(self.device), False, self.settings.settle.redraw_timeout)

    def _wait_for_rest(self, ids: torch.Tensor, drawn: bool, timeout: float) -> None:
        """Start the rest check of the heaps of ``ids`` (a new drop when ``drawn``), replacing any check of theirs
        under way."""
        others = self._resting.subset(~torch.isin(self._resting.env_ids, ids))
        self._resting = others.joined(_HeapsComingToRest.started(self, ids, drawn, timeout))

    def coming_to_rest(self, env_ids: torch.Tensor) -> torch.Tensor:
        """Which of ``env_ids`` ((m,) long) hold heaps from :meth:`begin_round` or :meth:`begin_rest` that have not
        come to rest as of the last :meth:`rested_rounds`: (m,) bool, on the device of ``env_ids``."""
        return torch.isin(env_ids.to(self.device), self._resting.env_ids).to(env_ids.device)

    def rest_all(self) -> torch.Tensor:
        """Step the world until every heap from :meth:`begin_round` or :meth:`begin_rest` has come to rest (or
        timed out); returns the envs that rested meanwhile, as :meth:`rested_rounds` does."""
        rested = [self.rested_rounds()]
        while len(self._resting.env_ids):
            self.step()
            rested.append(self.rested_rounds())
        return torch.cat(rested)

    def rested_rounds(self) -> torch.Tensor:
        """Envs whose heaps from :meth:`begin_round` or :meth:`begin_rest` have come to rest (or timed out, or
        failed ``MAX_REDRAWS`` times) since the last call, (m,) long; for heaps drawn by :meth:`begin_round` (or
        drawn again here after a failure), ``round.settle_time`` and ``round.settled`` are set."""
        heaps = self._resting
        if not len(heaps.env_ids):
            return heaps.env_ids
        cfg = self.settings.settle
        now = self.steps_taken
        pos = self.objects.data.body_pos_w.torch[heaps.env_ids]
        quat = self.objects.data.body_quat_w.torch[heaps.env_ids]
        placed = self.round.placed[heaps.env_ids]
        interval = (now - heaps.since_step) * self.dt  # [s] since each heap's last motion check
        checked = interval >= cfg.quiet_time
        seconds = interval.clamp(min=self.dt).unsqueeze(1)
        moving = self._moving(pos, quat, heaps.since_pos, heaps.since_quat, seconds) & placed
        failed = self._heap_faults(heaps.env_ids, placed, HEAP_MAX_SPEED, out_below_wall_top=True)
        at_rest = checked & ~moving.any(dim=1) & ~failed
        age = (now - heaps.dropped_step) * self.dt
        retry = failed & (heaps.redraws < MAX_REDRAWS)
        done = at_rest | (failed & ~retry) | (~failed & (age >= heaps.timeout))
        # Heaps still moving start a new motion check from here; failed ones are drawn again.
        recheck = checked & ~done
        heaps.since_step = torch.where(recheck, now, heaps.since_step)
        heaps.since_pos[recheck], heaps.since_quat[recheck] = pos[recheck], quat[recheck]
        if bool(retry.any()):
            rows = retry.nonzero().flatten()
            self._redraw_failed(heaps.env_ids[rows])
            heaps.drawn[rows] = True
            heaps.redraws[rows] += 1
            heaps.dropped_step[rows] = heaps.since_step[rows] = now
            heaps.since_pos[rows] = self.objects.data.body_pos_w.torch[heaps.env_ids[rows]]
            heaps.since_quat[rows] = self.objects.data.body_quat_w.torch[heaps.env_ids[rows]]
        rested = heaps.env_ids[done]
        recorded = done & heaps.drawn
        self.round.settle_time[heaps.env_ids[recorded]] = torch.minimum(age[recorded], heaps.timeout[recorded])
        self.round.settled[heaps.env_ids[recorded]] = at_rest[recorded]
        self._resting = heaps.subset(~done)
        return rested

    def _drop(self, ids: torch.Tensor) -> torch.Tensor:
        """Draw new heaps in ``ids``, drop them (park the other objects) and store the round, not yet settled.
        Returns the placed objects (len(ids), P)."""
        self.overflow.clear(ids)
        draw = randomization.draw_round(self.settings, self.pool, len(ids), self.generator)
        poses = self._park_pose.expand(len(ids), -1, -1).clone()
        drop = randomization.drop_poses(self.settings, self.pool, draw.placed, self.generator)
        placed = draw.placed.to(self.device)
        poses[placed] = drop.to(self.device)[placed]
        poses[..., :3] += self.env_origins[ids].unsqueeze(1)
        self._write_object_poses(ids, poses)
        self._apply_materials(ids, draw)
        self.scene.reset(env_ids=ids)
        info = RoundInfo(
            placed=placed,
            mass=draw.mass.to(self.device),
            static_friction=draw.static_friction.to(self.device),
            dynamic_friction=draw.dynamic_friction.to(self.device),
            restitution=draw.restitution.to(self.device),
            settle_time=torch.zeros(len(ids), device=self.device),
            settled=torch.zeros(len(ids), dtype=torch.bool, device=self.device),
        )
        self._store_round(ids, info)
        self._hold_parked(ids, placed)
        return placed

    def _reset_articulations(self, env_ids: torch.Tensor, only_nonfinite: bool = False) -> None:
        """Put the articulations (e.g. the gripper) of ``env_ids`` back at their default joint state, at rest;
        with ``only_nonfinite``, only where their joint state is non-finite. A blown-up heap spoils the whole
        env's state: without this, every redraw of it blew up again from the gripper's non-finite state."""
        all_envs = torch.arange(self.num_envs, device=self.device)
        for articulation in self.scene.articulations.values():
            data = articulation.data
            position, velocity = data.joint_pos.torch.clone(), data.joint_vel.torch.clone()
            reset = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
            reset[env_ids] = True
            if only_nonfinite:
                reset &= ~(torch.isfinite(position).all(dim=-1) & torch.isfinite(velocity).all(dim=-1))
                if not bool(reset.any()):
                    continue
            position[reset] = data.default_joint_pos.torch[reset]
            velocity[reset] = data.default_joint_vel.torch[reset]
            # All envs are written (the others keep their state), as for the object collection.
            articulation.write_joint_state_to_sim_index(position=position, velocity=velocity, env_ids=all_envs)

    def _apply_materials(self, ids: torch.Tensor, draw: "randomization.RoundDraw") -> None:
        masses = draw.mass.to(self.device)
        self.objects.set_masses_index(masses=masses, env_ids=ids)
        ratio = (masses / self._default_mass[ids]).unsqueeze(-1)
        self.objects.set_inertias_index(inertias=self._default_inertia[ids] * ratio, env_ids=ids)
        randomization.write_contact_materials(self, ids, draw)

    def settle(
        self, env_ids: torch.Tensor, placed: torch.Tensor, timeout: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Step until every placed object of every env in ``env_ids`` is at rest, or the timeout.

        Rest is judged on motion over a window of ``quiet_time`` (displacement / window below
        ``linear_speed``, rotation / window below ``angular_speed``) rather than on instantaneous
        velocities, which chatter in resting contact without the objects going anywhere. A heap whose physics
        failed (see :meth:`new_round`) is not waited for and counts as not at rest.

        Args:
            timeout: simulated seconds; ``settings.settle.timeout`` by default.

        Returns:
            settle_time: (len(env_ids),) simulated seconds until each env came to rest (timeout if never).
            settled: (len(env_ids),) bool, False where the timeout came first or the physics failed.
        """
        settle_time, settled, _ = self._settle(env_ids, placed, timeout)
        return settle_time, settled

    def _settle(
        self, env_ids: torch.Tensor, placed: torch.Tensor, timeout: float | None = None, redraws: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`settle`, plus (len(env_ids),) bool: the heaps whose physics failed.

        With ``redraws`` ((len(env_ids),) long, counted up in place), a heap whose physics fails is drawn
        again at once while the others settle on (at most ``MAX_REDRAWS`` times an env), its clock restarted.
        """
        cfg = self.settings.settle
        timeout = cfg.timeout if timeout is None else timeout
        window = max(1, round(cfg.quiet_time / self.dt))
        num_windows = max(1, round(timeout / (window * self.dt)))
        n = len(env_ids)
        placed = placed.clone()
        settle_time = torch.full((n,), timeout, device=self.device)
        done = torch.zeros(n, dtype=torch.bool, device=self.device)
        failed = torch.zeros(n, dtype=torch.bool, device=self.device)
        timed_out = torch.zeros(n, dtype=torch.bool, device=self.device)
        start = torch.zeros(n, dtype=torch.long, device=self.device)  # the window each heap was dropped after
        previous_pos = self.objects.data.body_pos_w.torch[env_ids].clone()
        previous_quat = self.objects.data.body_quat_w.torch[env_ids].clone()
        index = 0
        while True:
            index += 1
            self.step(window)
            pos = self.objects.data.body_pos_w.torch[env_ids]
            quat = self.objects.data.body_quat_w.torch[env_ids]
            moving = self._moving(pos, quat, previous_pos, previous_quat, window * self.dt) & placed
            active = ~(done | failed | timed_out)
            # A heap that blew up, or threw an object out below the wall tops, will not come right again.
            failed |= active & self._heap_faults(env_ids, placed, HEAP_MAX_SPEED, out_below_wall_top=True)
            newly = active & ~failed & ~moving.any(dim=1)
            age = index - start
            settle_time = torch.where(newly, age * window * self.dt, settle_time)
            done |= newly
            timed_out |= ~(done | failed) & (age >= num_windows)
            if redraws is not None:
                retry = failed & (redraws < MAX_REDRAWS)
                if bool(retry.any()):
                    rows = retry.nonzero().flatten()
                    redraws[rows] += 1
                    placed[rows] = self._redraw_failed(env_ids[rows])
                    failed[rows] = False
                    start[rows] = index
                    settle_time[rows] = timeout
                    pos = self.objects.data.body_pos_w.torch[env_ids]
                    quat = self.objects.data.body_quat_w.torch[env_ids]
            if bool((done | failed | timed_out).all()):
                break
            previous_pos, previous_quat = pos.clone(), quat.clone()
        return settle_time, done, failed

    def _moving(self, pos, quat, previous_pos, previous_quat, seconds) -> torch.Tensor:
        """(n, P) bool: objects faster than the settle speeds between two poses ``seconds`` apart (a float, or
        (n, 1)); a non-finite pose counts as moving."""
        cfg = self.settings.settle
        speed = torch.linalg.norm(pos - previous_pos, dim=-1) / seconds
        turn = 2 * torch.acos((quat * previous_quat).sum(-1).abs().clamp(max=1.0)) / seconds
        return (speed > cfg.linear_speed) | (turn > cfg.angular_speed) | ~torch.isfinite(speed)

    def _redraw_failed(self, env_ids: torch.Tensor) -> torch.Tensor:
        """Draw again the heaps of ``env_ids`` whose physics failed, their articulations reset; counted in
        ``heap_faults``. Returns the placed objects (len(env_ids), P)."""
        self.heap_faults += len(env_ids)
        self._reset_articulations(env_ids)
        return self._drop(env_ids)

    def park_objects(self, env_ids: torch.Tensor, slots: torch.Tensor) -> None:
        """Move one pool object per listed env (``slots[i]`` of ``env_ids[i]``) back to its parking spot."""
        poses = self.objects.data.body_link_pose_w.torch[env_ids].clone()
        rows = torch.arange(len(env_ids), device=self.device)
        poses[rows, slots] = self._park_pose[slots]
        poses[rows, slots, :3] += self.env_origins[env_ids]
        self._write_object_poses(env_ids, poses)
        self.round.placed[env_ids, slots] = False
        self._hold_parked(env_ids, self.round.placed[env_ids])

    def _hold_parked(self, env_ids: torch.Tensor, placed: torch.Tensor) -> None:
        """Hold the parked (not ``placed``, (n, P) bool) pool objects of ``env_ids`` in place with an upward
        force equal to their weight [N], and release the placed ones. Set after every change of placement,
        mass or asset reset (``scene.reset`` clears the force)."""
        gravity = torch.tensor(self.sim.cfg.gravity, device=self.device)
        mass = self.objects.data.body_mass.torch[env_ids]
        forces = torch.where(~placed.unsqueeze(-1), -gravity * mass.unsqueeze(-1), 0.0)
        self.objects.permanent_wrench_composer.set_forces_and_torques_index(
            forces=forces, torques=torch.zeros_like(forces), env_ids=env_ids, is_global=True
        )

    def _write_object_poses(self, env_ids: torch.Tensor, poses: torch.Tensor) -> None:
        """Write world poses (n, P, 7) of the pool objects of ``env_ids`` and stop them.

        The write covers all envs (the others keep their state): in Isaac Lab 3.0 with Newton, writing the
        collection's velocities for a subset of envs left some of them without collisions (objects fell
        through the floor), while full writes behave.
        """
        data = self.objects.data
        all_poses = data.body_link_pose_w.torch.clone()
        all_poses[env_ids] = poses
        velocities = torch.cat((data.body_lin_vel_w.torch, data.body_ang_vel_w.torch), dim=-1).clone()
        velocities[env_ids] = 0.0
        self.objects.write_body_pose_to_sim_index(body_poses=all_poses)
        self.objects.write_body_velocity_to_sim_index(body_velocities=velocities)

    def place_objects(self, env_ids: torch.Tensor, slots: torch.Tensor, poses: torch.Tensor) -> RoundInfo:
        """Put chosen pool objects at given env-local poses (a scripted heap, e.g. for tests and demos),
        park all others, keep the default materials, and settle.

        Args:
            env_ids: (n,) envs. slots: (n, m) pool slots. poses: (n, m, 7) env-local (x, y, z, qx, qy, qz, qw).
        """
        n = len(env_ids)
        all_poses = self._park_pose.expand(n, -1, -1).clone()
        rows = torch.arange(n, device=self.device).unsqueeze(1)
        all_poses[rows, slots] = poses.to(self.device)
        all_poses[..., :3] += self.env_origins[env_ids].unsqueeze(1)
        self._write_object_poses(env_ids, all_poses)
        placed = torch.zeros(n, len(self.pool), dtype=torch.bool, device=self.device)
        placed[rows, slots] = True
        ones = torch.ones(n, len(self.pool), device=self.device)
        info = RoundInfo(
            placed=placed,
            mass=self._default_mass[env_ids].clone(),
            static_friction=ones.clone(),
            dynamic_friction=ones.clone(),
            restitution=torch.zeros_like(ones),
        )
        self.scene.reset(env_ids=env_ids)
        self._hold_parked(env_ids, placed)
        info.settle_time, info.settled = self.settle(env_ids, placed)
        self._store_round(env_ids, info)
        return info

    def _store_round(self, env_ids: torch.Tensor, info: RoundInfo) -> None:
        if self.round is None:
            self.round = RoundInfo(**{name: value.clone() for name, value in vars(info).items()})
            if len(env_ids) != self.num_envs:
                raise ValueError("the first round must cover all envs")
            return
        for name, value in vars(info).items():
            getattr(self.round, name)[env_ids] = value

    def faulty_envs(self, max_speed: float) -> torch.Tensor:
        """(N,) bool: non-finite object state, an object faster than ``max_speed`` [m/s], a placed object
        outside the bin (beyond the walls, or below the floor), or contacts or constraint rows lost to full
        physics buffers since the heap was drawn (:mod:`dexrl.sim.overflow`)."""
        return self._heap_faults(torch.arange(self.num_envs, device=self.device), self.round.placed, max_speed)

    def _heap_faults(
        self, env_ids: torch.Tensor, placed: torch.Tensor, max_speed: float, out_below_wall_top: bool = False
    ) -> torch.Tensor:
        """(len(env_ids),) bool: :meth:`faulty_envs` of ``env_ids`` for the placed objects ``placed``
        (len(env_ids), P). ``out_below_wall_top`` counts an object outside the bin only once it is below the
        wall tops (one still in the air above them may fall back in)."""
        pos = self.object_positions()[env_ids]
        vel = self.objects.data.body_lin_vel_w.torch[env_ids]
        nonfinite = ~(torch.isfinite(pos).all(dim=-1) & torch.isfinite(vel).all(dim=-1)).all(dim=1)
        too_fast = (torch.linalg.norm(vel, dim=-1) > max_speed).any(dim=1)
        x0, x1, y0, y1, z0, z1 = self.interior_bounds.tolist()
        slack = 0.02  # [m] objects leaning on a wall top may overhang it a little
        outside = (
            (pos[..., 0] < x0 - slack) | (pos[..., 0] > x1 + slack) | (pos[..., 1] < y0 - slack)
            | (pos[..., 1] > y1 + slack) | (pos[..., 2] < z0 - 0.01)
        )
        if out_below_wall_top:
            outside &= pos[..., 2] < z1
        thrown_out = (outside & placed).any(dim=1)
        return nonfinite | too_fast | thrown_out | self.overflow.envs()[env_ids]

    # ------------------------------------------------------------------ sensing
    def render_depth(self, noise: bool | None = None) -> torch.Tensor:
        """Depth images of all envs, (N, H, W) float32 [m] along the optical axis; 0 where nothing was hit."""
        self.camera.update(self.dt, force_recompute=True)
        depth = self.camera.data.output["distance_to_image_plane"].torch[..., 0].clone()
        depth = torch.nan_to_num(depth, nan=0.0, posinf=0.0, neginf=0.0)
        use_noise = self.settings.randomization.depth_noise if noise is None else noise
        if use_noise:
            depth = randomization.depth_noise(depth, self.settings.randomization, self.generator)
        return depth

    def bin_mask(self, depth: torch.Tensor, env_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Segmentation mask of the bin interior, (n, H, W) bool, from the scene geometry: pixels whose
        deprojected 3D point lies inside the interior (walls excluded) at or above the bin floor.

        Args:
            depth: (n, H, W) depth images [m] of ``env_ids`` (all N envs by default), in that order.
        """
        k = self.settings.camera.intrinsics
        ids = slice(None) if env_ids is None else env_ids
        cameras = self.extrinsics[ids]
        offsets = cameras.position - self.env_origins[ids]  # (n, 3): camera centres, env-local [m]
        # A pixel (u, v) at depth d lies at d * ray, ray = ((u - cx) / fx, (v - cy) / fy, 1) in the camera frame;
        # env-local axis i is d * (R[i] . ray) + offset[i]. One axis at a time, never the (n, H, W, 3) cloud:
        # for 8192 images that cloud is 20 GB; on an H200 this took 70 ms where the cloud took 1.6 s.
        ray_u = (torch.arange(k.width, device=depth.device, dtype=depth.dtype) - k.cx) / k.fx
        ray_v = (torch.arange(k.height, device=depth.device, dtype=depth.dtype) - k.cy) / k.fy

        def local(axis: int) -> torch.Tensor:
            row = cameras.rotation[:, axis].to(depth.dtype).view(-1, 3, 1, 1)
            along_ray = row[:, 0] * ray_u + row[:, 1] * ray_v.unsqueeze(-1) + row[:, 2]  # (n, H, W)
            return along_ray.mul_(depth).add_(offsets[:, axis].view(-1, 1, 1))

        x0, x1, y0, y1, z0, _ = self.interior_bounds.tolist()
        m = 0.008  # [m] keeps the walls' inner faces, seen at a grazing angle near the corners, out of the mask
        x = local(0)
        inside = (x > x0 + m) & (x < x1 - m)
        y = local(1)
        inside &= (y > y0 + m) & (y < y1 - m)
        inside &= local(2) > z0 - 0.002
        return inside & (depth > 0)

    def object_positions(self) -> torch.Tensor:
        """Env-local object positions, (N, P, 3) [m]."""
        return self.objects.data.body_pos_w.torch - self.env_origins.unsqueeze(1)

    def timed_round(self) -> tuple[RoundInfo, float]:
        """:meth:`new_round` for all envs and the wall-clock seconds it took."""
        start = time.perf_counter()
        info = self.new_round()
        return info, time.perf_counter() - start
