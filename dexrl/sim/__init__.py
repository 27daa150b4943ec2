"""Isaac Lab scene, object sets, randomization, embodiments and executor (kit-less Newton by default).

Submodules import Isaac Lab; import them explicitly (``from dexrl.sim.bin_world import BinWorld``).
"""
