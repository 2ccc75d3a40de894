"""A SchemaRegistry over the Confluent REST API: any external registry, or ours served."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from mesh.adapters.schemaregistry.core import RegisteredSchema, check_level
from mesh.errors import (
    IncompatibleSchemaError,
    InvalidSchemaError,
    RegistryUnavailableError,
    SchemaNotFoundError,
    SchemaRegistryError,
    SubjectNotFoundError,
    VersionNotFoundError,
)

__all__ = ["HttpRegistry"]

_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
_ERRORS: dict[int, type[SchemaRegistryError]] = {
    40401: SubjectNotFoundError,
    40402: VersionNotFoundError,
    40403: SchemaNotFoundError,
    409: IncompatibleSchemaError,
    42201: InvalidSchemaError,
}


class HttpRegistry:
    """Talks to ``url`` (e.g. ``MESH_SCHEMA_REGISTRY_URL``) and caches what never changes."""

    def __init__(
        self,
        url: str,
        auth: str | None = None,
        timeout_s: float = 10.0,
        client: httpx.Client | None = None,
    ) -> None:
        basic = tuple(auth.split(":", 1)) if auth else None
        self.url = url.rstrip("/")
        self._client = client or httpx.Client(
            base_url=self.url,
            auth=basic,  # type: ignore[arg-type]
            timeout=timeout_s,
        )
        self._client.headers.update({"Content-Type": _CONTENT_TYPE, "Accept": _CONTENT_TYPE})
        self._by_id: dict[int, str] = {}

    def register(self, subject: str, schema: str) -> RegisteredSchema:
        body = self._call("POST", f"/subjects/{_q(subject)}/versions", {"schema": schema})
        return self.lookup(subject, schema) if "version" not in body else _registered(body, subject)

    def schema_by_id(self, schema_id: int) -> str:
        if schema_id not in self._by_id:
            self._by_id[schema_id] = str(self._call("GET", f"/schemas/ids/{schema_id}")["schema"])
        return self._by_id[schema_id]

    def lookup(self, subject: str, schema: str) -> RegisteredSchema:
        return _registered(
            self._call("POST", f"/subjects/{_q(subject)}", {"schema": schema}), subject
        )

    def subjects(self) -> list[str]:
        return list(self._call("GET", "/subjects"))

    def versions(self, subject: str) -> list[int]:
        return list(self._call("GET", f"/subjects/{_q(subject)}/versions"))

    def get_version(self, subject: str, version: int | str) -> RegisteredSchema:
        return _registered(
            self._call("GET", f"/subjects/{_q(subject)}/versions/{version}"), subject
        )

    def get_level(self, subject: str | None = None) -> str:
        path = "/config" if subject is None else f"/config/{_q(subject)}?defaultToGlobal=true"
        return str(self._call("GET", path)["compatibilityLevel"])

    def set_level(self, level: str, subject: str | None = None) -> str:
        path = "/config" if subject is None else f"/config/{_q(subject)}"
        return str(self._call("PUT", path, {"compatibility": check_level(level)})["compatibility"])

    def compatibility_problems(
        self, subject: str, schema: str, against: str | int = "all"
    ) -> list[str]:
        suffix = "" if against == "all" else f"/{against}"
        path = f"/compatibility/subjects/{_q(subject)}/versions{suffix}?verbose=true"
        try:
            body = self._call("POST", path, {"schema": schema})
        except SubjectNotFoundError:
            return []
        if body.get("is_compatible"):
            return []
        return [str(m) for m in body.get("messages", [])] or ["incompatible"]

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        try:
            response = self._client.request(method, path, json=payload)
        except httpx.HTTPError as exc:
            raise RegistryUnavailableError(
                f"schema registry at {self.url} did not answer {method} {path}: {exc}. "
                "Check MESH_SCHEMA_REGISTRY_URL"
            ) from exc
        body = response.json() if response.content else {}
        if response.is_success:
            return body
        code = body.get("error_code", response.status_code) if isinstance(body, dict) else 0
        message = body.get("message", response.text) if isinstance(body, dict) else response.text
        error = _ERRORS.get(int(code), SchemaRegistryError)
        raise error(f"schema registry refused {method} {path}: {message} (error {code})")


def _q(subject: str) -> str:
    return quote(subject, safe="")


def _registered(body: dict[str, Any], subject: str) -> RegisteredSchema:
    return RegisteredSchema(
        body.get("subject", subject), int(body["version"]), int(body["id"]), str(body["schema"])
    )
