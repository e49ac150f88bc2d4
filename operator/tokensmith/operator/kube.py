"""A small async Kubernetes API client for the handlers' writes (aiohttp, which kopf already ships).

kopf reads (watches, indices) and posts Events; the handlers' own writes (create children, patch
status, delete pods) go through this client so that every call is visible in one place: each request
is counted by (verb, group, resource) and checked against `rbac.OPERATOR_PERMISSIONS`, so the
least-privilege Role in the Helm chart and the code can never drift apart unnoticed.
"""

from __future__ import annotations

import asyncio
import collections
import os
import ssl
import tempfile
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tokensmith.operator import rbac

PLURALS = {
    "Pod": "pods",
    "Service": "services",
    "ConfigMap": "configmaps",
    "ServiceAccount": "serviceaccounts",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "PodGroup": "podgroups",
    "Job": "jobs",
    "NetworkPolicy": "networkpolicies",
    "LLMTrainingJob": "llmtrainingjobs",
}
SA_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


@dataclass
class RequestLog:
    """Counts of API requests by (verb, group, resource); the benchmark and the RBAC test read it."""

    counts: collections.Counter[tuple[str, str, str]] = field(default_factory=collections.Counter)

    def add(self, verb: str, group: str, resource: str) -> None:
        self.counts[(verb, group, resource)] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class Endpoint:
    """Where the API is and how to authenticate (built from kopf's ConnectionInfo)."""

    server: str
    token: str | None = None
    token_file: str | None = None  # re-read on every request: bound tokens rotate
    ca_path: str | None = None
    ca_data: str | None = None
    insecure: bool = False
    cert_path: str | None = None
    key_path: str | None = None

    @classmethod
    def from_kopf(cls, info: Any) -> Endpoint:
        cert, key = info.certificate_path, info.private_key_path
        if info.certificate_data and info.private_key_data:  # ssl wants files
            cert, key = _temp_file(info.certificate_data), _temp_file(info.private_key_data)
        token_file = SA_TOKEN if info.token and os.path.exists(SA_TOKEN) else None
        ca_data = info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data
        return cls(
            server=info.server.rstrip("/"),
            token=info.token,
            token_file=token_file,
            ca_path=os.fspath(info.ca_path) if info.ca_path else None,
            ca_data=ca_data,
            insecure=bool(info.insecure),
            cert_path=os.fspath(cert) if cert else None,
            key_path=os.fspath(key) if key else None,
        )

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        if self.insecure:
            return False
        ctx = ssl.create_default_context(cafile=self.ca_path, cadata=self.ca_data)
        if self.cert_path and self.key_path:
            ctx.load_cert_chain(self.cert_path, self.key_path)
        return ctx

    def auth_header(self) -> dict[str, str]:
        token = self.token
        if self.token_file:
            try:
                with open(self.token_file) as handle:
                    token = handle.read().strip()
            except OSError:
                pass
        return {"Authorization": f"Bearer {token}"} if token else {}


def _temp_file(data: str | bytes) -> str:
    handle = tempfile.NamedTemporaryFile(delete=False, suffix=".pem")  # noqa: SIM115 - kept for ssl
    handle.write(data.encode() if isinstance(data, str) else data)
    handle.close()
    return handle.name


def collection_path(api_version: str, plural: str, namespace: str) -> str:
    """The collection's URL path; an empty namespace means a cluster-scoped resource (nodes)."""
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"


class KubeClient:
    """create / patch (merge) / delete, with request accounting and an RBAC self-check."""

    def __init__(self, endpoint: Endpoint, log: RequestLog | None = None, timeout: float = 30.0) -> None:
        self.endpoint = endpoint
        self.log = log or RequestLog()
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self.endpoint.ssl_context(), limit=32)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, headers={"User-Agent": "tokensmith-operator"}
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _request(
        self, verb: str, method: str, api_version: str, resource: str, path: str, body: Any = None, **kw: Any
    ) -> dict[str, Any]:
        group = api_version.rpartition("/")[0]
        rbac.check_allowed(verb, group, resource)
        self.log.add(verb, group, resource)
        session = await self._get_session()
        headers = {"Accept": "application/json", **self.endpoint.auth_header()}
        if method == "PATCH":
            headers["Content-Type"] = "application/merge-patch+json"
        for attempt in range(4):  # transient API server trouble: 429/5xx and connection errors
            try:
                async with session.request(
                    method, self.endpoint.server + path, json=body, headers=headers, **kw
                ) as response:
                    if response.status in (429, 500, 502, 503, 504) and attempt < 3:
                        await asyncio.sleep(0.2 * 2**attempt)
                        continue
                    data = await response.json(content_type=None) if response.content_length != 0 else {}
                    if response.status >= 400:
                        message = data.get("message") if isinstance(data, dict) else str(data)
                        raise ApiError(response.status, str(message)[:300])
                    return data if isinstance(data, dict) else {}
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError):
                if attempt == 3:
                    raise
                await asyncio.sleep(0.2 * 2**attempt)
        raise ApiError(503, "API server unavailable")  # pragma: no cover - loop always returns or raises

    async def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Create; None when it already exists (409): creation by deterministic name is idempotent."""
        plural = PLURALS[obj["kind"]]
        ns = obj["metadata"]["namespace"]
        try:
            return await self._request(
                "create",
                "POST",
                obj["apiVersion"],
                plural,
                collection_path(obj["apiVersion"], plural, ns),
                obj,
            )
        except ApiError as err:
            if err.status == 409:
                return None
            raise

    async def patch(
        self,
        api_version: str,
        plural: str,
        namespace: str,
        name: str,
        body: dict[str, Any],
        subresource: str = "",
    ) -> dict[str, Any]:
        path = f"{collection_path(api_version, plural, namespace)}/{name}" + (
            f"/{subresource}" if subresource else ""
        )
        resource = f"{plural}/{subresource}" if subresource else plural
        return await self._request("patch", "PATCH", api_version, resource, path, body)

    async def delete(
        self, api_version: str, plural: str, namespace: str, name: str, grace_seconds: int | None = None
    ) -> bool:
        """Delete (background propagation); False when it was already gone."""
        body: dict[str, Any] = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "propagationPolicy": "Background",
        }
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        path = f"{collection_path(api_version, plural, namespace)}/{name}"
        try:
            await self._request("delete", "DELETE", api_version, plural, path, body)
        except ApiError as err:
            if err.status == 404:
                return False
            raise
        return True
