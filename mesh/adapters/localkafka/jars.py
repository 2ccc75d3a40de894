"""Fetch the Apache Kafka jars from Maven Central once, into a per-version cache.

Maven resolves ``org.apache.kafka:kafka_2.13`` and everything it needs at run time from
``infra/kafka/pom.xml``. A finished fetch leaves a ``.complete`` marker, so an interrupted one
is redone rather than half-used. Maven's own repository goes to the same cache
(``<cache>/m2``), not the user's ``~/.m2``: everything the mesh downloads stays in one place.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from mesh.errors import LocalKafkaError

__all__ = ["INFRA_DIR", "classpath", "default_cache_dir", "ensure_jars"]

INFRA_DIR = Path(__file__).resolve().parents[3] / "infra" / "kafka"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "agent-mesh"


def classpath(jars: Path) -> str:
    return f"{jars}/*"


def ensure_jars(version: str, cache_dir: Path | None = None) -> Path:
    """The directory holding every jar of Kafka ``version``; fetch it if missing."""
    target = (cache_dir or default_cache_dir()) / f"kafka-{version}" / "libs"
    if (target / ".complete").exists():
        return target
    if not (INFRA_DIR / "pom.xml").exists():
        raise LocalKafkaError(
            f"{INFRA_DIR / 'pom.xml'} is missing; run the mesh from a source checkout, or use an "
            "existing cluster with MESH_BOOTSTRAP_SERVERS"
        )
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalKafkaError(
            "Maven (mvn) is needed once to fetch the Kafka jars and was not found on PATH; "
            "install Maven, or use an existing cluster with MESH_BOOTSTRAP_SERVERS"
        )
    shutil.rmtree(target, ignore_errors=True)
    repository = target.parents[1] / "m2"
    command = [
        mvn, "-q", "-B", "-f", str(INFRA_DIR / "pom.xml"), "dependency:copy-dependencies",
        f"-Dkafka.version={version}", f"-DoutputDirectory={target}", "-DincludeScope=runtime",
        f"-Dmaven.repo.local={repository}",
    ]  # fmt: skip
    sys.stderr.write(
        f"fetching Apache Kafka {version} from Maven Central into {target.parent} (once; about "
        "50 MB)...\n"
    )
    sys.stderr.flush()
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0 or not any(target.glob("kafka_2.13-*.jar")):
        raise LocalKafkaError(
            f"fetching Kafka {version} from Maven Central failed (is the version right and "
            f"Maven Central reachable?): {(result.stdout + result.stderr).strip()[-800:]}"
        )
    (target / ".complete").write_text(version)
    return target
