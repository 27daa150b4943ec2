"""DexRL's Isaac Sim extension (``dexrl.ui``).

``launch`` and ``view`` are plain Python (pytest imports them); everything that imports omni is in
``dexrl_ui.kit``, the module Kit loads (``config/extension.toml``).
"""
