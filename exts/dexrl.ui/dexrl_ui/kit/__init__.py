"""The Kit side of ``dexrl.ui``: Kit imports this module and starts the IExt found in it."""

from .extension import DexrlUiExtension, get_instance

__all__ = ["DexrlUiExtension", "get_instance"]
