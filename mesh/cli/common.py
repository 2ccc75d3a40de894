"""What every command shares: settings, the console, the broker address."""

from __future__ import annotations

from rich.console import Console

from mesh.kafka.source import bootstrap_servers
from mesh.settings import Settings, load_settings

__all__ = ["bootstrap", "console", "settings"]

console = Console(highlight=False)


def settings() -> Settings:
    """The process's settings (raises ConfigError, shown by the error boundary)."""
    return load_settings()


def bootstrap(current: Settings) -> str:
    return bootstrap_servers(current)
