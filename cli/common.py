"""What every command shares: settings, the console, the cluster."""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

from mesh.adapters.kafka.source import resolve
from mesh.adapters.schemaregistry.factory import open_registry
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.messages import MessageCodec
from mesh.domain.identity import PublicKeys
from mesh.settings import Cluster, Settings, load_settings

__all__ = ["cluster", "console", "parse_time", "reading", "settings"]


def _width() -> int | None:
    """A terminal's own width; to a file or a pipe, no width at all (COLUMNS if set): a table
    is never squeezed into 80 columns and cut where a script or a log reads it."""
    if sys.stdout.isatty():
        return None
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() else 100_000


#: soft_wrap: lines are never broken at a width, when printed to a file or a pipe least of all;
#: no emoji codes: ids like chain:abc: are text.
console = Console(highlight=False, soft_wrap=True, emoji=False, width=_width())


def settings() -> Settings:
    """The process's settings (raises ConfigError, shown by the error boundary)."""
    return load_settings()


def cluster(current: Settings) -> Cluster:
    """The cluster to talk to (raises KafkaUnavailableError, shown by the error boundary)."""
    return resolve(current)


@contextmanager
def reading(current: Settings) -> Iterator[tuple[Cluster, MessageCodec]]:
    """The cluster and a codec on its schema registry (closed after the block): what a
    command that reads signed records needs."""
    where = cluster(current)
    registry = open_registry(current, where)
    try:
        yield where, MessageCodec(Serde(registry), PublicKeys())
    finally:
        registry.close()


def parse_time(text: str, option: str) -> int:
    """An ISO-8601 time (UTC unless it says otherwise) or epoch ms, as epoch ms."""
    if text.isdigit():
        return int(text)
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a time; use ISO-8601 (2026-11-23T10:00:00Z) or epoch ms",
            param_hint=option,
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1000)
