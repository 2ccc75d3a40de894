"""`mesh tail TOPIC`: a mesh topic's records, decoded and checked, to poke the mesh by hand."""

from __future__ import annotations

import json
import signal
import threading

import typer

from cli.common import cluster, console, settings
from mesh.adapters.kafka.keys import read_keys
from mesh.adapters.keyfiles import mesh_anchor, trust_anchors
from mesh.adapters.schemaregistry.factory import open_registry
from mesh.adapters.serde.codec import Serde
from mesh.adapters.serde.messages import MessageCodec
from mesh.adapters.tail import Seen, resolve_topic
from mesh.adapters.tail import tail as tail_topic
from mesh.domain.identity import PublicKeys


def tail(
    topic: str = typer.Argument(
        ..., help="telemetry, tasks, control, dlq, registry-events, keys, inbox.AGENT, ..."
    ),
    last: int = typer.Option(10, "--last", min=0, max=100_000, help="Records per partition."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing as records come."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """Print a topic's last records (and, with --follow, new ones), decoded and verified."""
    name = resolve_topic(topic)
    current = settings()
    where = cluster(current)
    registry = open_registry(current, where)
    stop = threading.Event()
    if follow:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
    try:
        codec = MessageCodec(Serde(registry), PublicKeys())
        keys = read_keys(where, codec.serde, mesh_anchor(current))
        records = tail_topic(
            where,
            name,
            codec,
            keys,
            trust_anchors(current),
            last,
            (lambda: not stop.is_set()) if follow else None,
        )
        for seen in records:
            if as_json:
                print(json.dumps(seen.to_json(), default=str), flush=True)
            else:
                console.print(_line(seen), highlight=False)
    finally:
        registry.close()


def _line(seen: Seen) -> str:
    mark = {True: "verified", False: "REFUSED", None: "-"}[seen.verified]
    head = f"{seen.at} {seen.topic}[{seen.partition}]@{seen.offset} key={seen.key or '-'} {mark}"
    view = seen.view
    if "subject" in view:
        head += f" {view['sender']} -> {view['recipient'] or '*'} {view['subject']}"
    elif "reason_code" in view:
        head += f" {view['reason_code']} from {view['source']}: {view['reason']}"
    if seen.problem:
        head += f" ({seen.problem})"
    return head
