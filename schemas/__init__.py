"""The versioned Avro contracts of Agent Mesh, as data files.

Layout: ``<subject>/v<N>.avsc``, where the subject is the record's full name. A published
version never changes: a change is a new file ``v<N+1>.avsc``, checked for compatibility
against every earlier version (``compatibility.json``) and pinned in ``lock.json``.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent

__all__ = ["ROOT"]
