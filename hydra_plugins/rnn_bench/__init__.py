"""Hydra plugins of this suite (Hydra instantiates launchers only from the ``hydra_plugins`` package)."""
