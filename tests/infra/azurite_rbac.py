"""An HTTP proxy in front of Azurite that authorizes every Blob service request as one Azure identity, with
Azure RBAC, as Azure Storage does for a Microsoft Entra caller: the Azure twin of iam_moto.py.

Azurite accepts any request signed with its shared key; real storage accounts of the stack take Entra tokens
only and authorize each request with the caller's role assignments. :class:`RbacProxy` listens on its own
port on 127.0.0.1, stands for one principal (``trainer``, ``registrar``, ``compute:gpu-cluster``...) and for
each request:

1. maps the REST call (method, path ``/<account>/<container>/<blob>``, ``restype=`` / ``comp=`` and the copy
   header) to an operation of :data:`azure_rbac.OPERATIONS` (:func:`operation_of`: Get Blob, Get Blob
   Properties, Put Blob, Put Block, Put Block List, Get Block List, List Blobs, Delete Blob, Create / Get /
   Delete Container, Get / Set Container Metadata);
2. scopes it at the stack's ARM id of the container Azurite names (``containers``: name -> ARM id, e.g.
   :func:`azure_rbac.containers` of the program under mocks), ``+ /blobs/<path>`` for a blob;
3. decides with :meth:`azure_rbac.Rbac.check` (ABAC conditions included); a denial is answered as Azure
   answers one (HTTP 403, ``x-ms-error-code: AuthorizationPermissionMismatch``, an XML ``<Error>`` body with
   Azure's message, followed here by the decision's reason naming principal, action and scope), a permitted
   request goes on to Azurite unchanged (the client's shared-key signature stays valid: it does not cover
   the host).

A request this module cannot map (another container, Copy Blob, leases, tags, account-level calls) is denied
with ``x-ms-error-code: UnmappedRequest`` and a message saying so: the table must grow with the code, never
let a call through unchecked. :attr:`RbacProxy.calls` records every decision (:class:`Check`).

Sources: the "Permissions" section of each operation's page of the Blob service REST API and "Authorize
with Microsoft Entra ID" (learn.microsoft.com/rest/api/storageservices); the 403 answer: "Blob service error
codes" (``AuthorizationPermissionMismatch``, "This request is not authorized to perform this operation using
this permission."). Not modelled: Put Blob / Put Block List creating a new blob with ``blobs/add/action``
only (no role the programs assign has add/action without write), SAS and anonymous access (the programs
disable shared keys and public access).
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import threading
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

from azure_rbac import OPERATIONS, Rbac, required

DENIED_MESSAGE = "This request is not authorized to perform this operation using this permission."


@dataclass(frozen=True)
class Check:
    """One decision: ``principal``; ``request`` (``METHOD /path?query``); ``operation`` (the REST operation's
    name, ``unmapped`` when none); ``action`` and ``scope`` (RBAC; empty when unmapped); ``allowed``;
    ``reason``."""

    principal: str
    request: str
    operation: str
    action: str
    scope: str
    allowed: bool
    reason: str


class Unmapped(LookupError):
    """A request :func:`operation_of` cannot map to an RBAC operation (the message says which)."""


#: (container-level?, method, restype, comp) -> (REST operation, azure_rbac.OPERATIONS key).
_TABLE: dict[tuple[bool, str, str, str], tuple[str, str]] = {
    (True, "PUT", "container", ""): ("Create Container", "container.create"),
    (True, "GET", "container", ""): ("Get Container Properties", "container.get_properties"),
    (True, "HEAD", "container", ""): ("Get Container Properties", "container.get_properties"),
    (True, "GET", "container", "metadata"): ("Get Container Metadata", "container.get_properties"),
    (True, "HEAD", "container", "metadata"): ("Get Container Metadata", "container.get_properties"),
    (True, "PUT", "container", "metadata"): ("Set Container Metadata", "container.set_metadata"),
    (True, "DELETE", "container", ""): ("Delete Container", "container.delete"),
    (True, "GET", "container", "list"): ("List Blobs", "blob.list"),
    (False, "GET", "", ""): ("Get Blob", "blob.read"),
    (False, "HEAD", "", ""): ("Get Blob Properties", "blob.read"),
    (False, "GET", "", "metadata"): ("Get Blob Metadata", "blob.read"),
    (False, "HEAD", "", "metadata"): ("Get Blob Metadata", "blob.read"),
    (False, "GET", "", "blocklist"): ("Get Block List", "blob.read"),
    (False, "PUT", "", ""): ("Put Blob", "blob.write"),
    (False, "PUT", "", "block"): ("Put Block", "blob.write"),
    (False, "PUT", "", "blocklist"): ("Put Block List", "blob.write"),
    (False, "PUT", "", "properties"): ("Set Blob Properties", "blob.write"),
    (False, "PUT", "", "metadata"): ("Set Blob Metadata", "blob.write"),
    (False, "DELETE", "", ""): ("Delete Blob", "blob.delete"),
}
assert {key for _, key in _TABLE.values()} <= set(OPERATIONS)


def operation_of(method: str, target: str, headers: Mapping[str, str], account: str) -> tuple[str, str, str, str]:
    """``(REST operation, OPERATIONS key, container, blob path)`` of one request (``target``: path and query).

    Raises :class:`Unmapped` for a request outside the table (account-level calls, another account, Copy
    Blob, leases, tags, ACLs...), naming it.
    """
    url = urlsplit(target)
    query = parse_qs(url.query, keep_blank_values=True)
    parts = unquote(url.path).lstrip("/").split("/", 2)
    if parts[0] != account or len(parts) < 2 or not parts[1]:
        raise Unmapped(f"no RBAC mapping for an account-level or foreign request {method} {target}")
    container, path = parts[1], (parts[2] if len(parts) > 2 else "")
    restype, comp = query.get("restype", [""])[0], query.get("comp", [""])[0]
    if any(k.lower() in ("x-ms-copy-source", "x-ms-lease-action") for k in headers):
        raise Unmapped(f"no RBAC mapping for a copy or lease request {method} {target}")
    found = _TABLE.get((not path, method, restype, comp))
    if found is None:
        raise Unmapped(f"no RBAC mapping for {method} {target} (restype={restype!r}, comp={comp!r})")
    return found[0], found[1], container, path


def decide(rbac: Rbac, principal: str, containers: Mapping[str, str], method: str, target: str,
           headers: Mapping[str, str], account: str) -> Check:
    """The :class:`Check` of one request made as ``principal`` (an unmapped one is a denial)."""
    request = f"{method} {target}"
    try:
        name, operation, container, path = operation_of(method, target, headers, account)
        if container not in containers:
            raise Unmapped(f"container {container!r} is not one of the stack's ({', '.join(sorted(containers))}): {request}")
    except Unmapped as e:
        return Check(principal, request, "unmapped", "", "", False, str(e))
    resource = {"container": containers[container]} | ({"path": path} if path else {})
    action, scope = required(operation, **resource)
    decision = rbac.check(principal, action, scope)
    return Check(principal, request, name, action, scope, decision.allowed, decision.reason)


def denial(check: Check) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body Azure Storage answers a denied request with (the body names the decision)."""
    code = "UnmappedRequest" if check.operation == "unmapped" else "AuthorizationPermissionMismatch"
    message = check.reason if code == "UnmappedRequest" else f"{DENIED_MESSAGE} {check.reason}"
    request_id = str(uuid.uuid4())
    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")
    body = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{escape(message)}\n'
            f"RequestId:{request_id}\nTime:{when}</Message></Error>").encode()
    headers = {"Content-Type": "application/xml", "x-ms-error-code": code, "x-ms-request-id": request_id,
               "x-ms-version": "2025-01-05"}
    return 403, headers, body


_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs expect; every answer carries Content-Length
    proxy: RbacProxy

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return data
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _answer(self, status: int, reason: str, headers: Mapping[str, str], body: bytes, head: bool) -> None:
        self.send_response(status, reason)
        for key, value in headers.items():
            self.send_header(key, value)
        if not (head and "Content-Length" in headers):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _handle(self) -> None:
        body = self._body()
        check = self.proxy.authorize(self.command, self.path, dict(self.headers.items()))
        head = self.command == "HEAD"
        if not check.allowed:
            status, headers, data = denial(check)
            self._answer(status, DENIED_MESSAGE, headers, data, head)
            return
        status, reason, headers, data = self.proxy.forward(self.command, self.path, dict(self.headers.items()), body)
        self._answer(status, reason, headers, data, head)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle


class RbacProxy:
    """A proxy on 127.0.0.1 (:attr:`port`) to Azurite on ``upstream_port`` that authorizes every request as
    ``principal`` with ``rbac``; ``containers`` maps Azurite's container names to the stack's container ARM
    ids. Use as a context manager (or :meth:`start` / :meth:`stop`); :attr:`calls` lists every decision
    (pass a shared list to collect several proxies' decisions in one); ``log``: a file each decision is appended
    to as one JSON line (:class:`Check`'s fields), for a rehearsal script to read."""

    def __init__(self, upstream_port: int, rbac: Rbac, containers: Mapping[str, str], principal: str, *,
                 account: str = "devstoreaccount1", calls: list[Check] | None = None,
                 log: Path | None = None) -> None:
        self.upstream_port, self.rbac, self.containers = upstream_port, rbac, dict(containers)
        self.principal, self.account, self.log = principal, account, log
        self.calls: list[Check] = [] if calls is None else calls
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"proxy": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"rbac-proxy-{principal}", daemon=True)

    def authorize(self, method: str, target: str, headers: Mapping[str, str]) -> Check:
        """Decide one request as this proxy's principal and record the decision."""
        check = decide(self.rbac, self.principal, self.containers, method, target, headers, self.account)
        with self._lock:
            self.calls.append(check)
            if self.log is not None:
                with self.log.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(asdict(check)) + "\n")
        return check

    def forward(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> tuple[int, str, dict[str, str], bytes]:
        """Send one request to Azurite as it came; return its status, reason, end-to-end headers and body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=120)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in _HOP}
            conn.request(method, target, body=body if body or method in ("PUT", "POST") else None, headers=sent)
            resp = conn.getresponse()
            data = resp.read()
            kept = {k: v for k, v in resp.getheaders() if k.lower() not in _HOP}
            if method == "HEAD" and resp.getheader("Content-Length") is not None:
                kept["Content-Length"] = resp.getheader("Content-Length")
            return resp.status, resp.reason, kept, data
        finally:
            conn.close()

    def denials(self) -> list[Check]:
        """The denied requests so far."""
        with self._lock:
            return [c for c in self.calls if not c.allowed]

    def connection_string(self, key: str) -> str:
        """A shared-key connection string whose Blob endpoint is this proxy (``key``: Azurite's account key)."""
        from local_servers import connection_string

        return connection_string(self.port, self.account, key)

    def start(self) -> RbacProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> RbacProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stack_model(stack: str) -> tuple[Rbac, dict[str, str]]:
    """(RBAC model, container name -> ARM id) of the Azure program's ``stack`` (``dev``/``prod``) under mocks."""
    from azure_rbac import assignments, containers, definitions
    from infra_helpers import run_cloud, stack_settings
    from infra_mocks import ensure_event_loop

    ensure_event_loop()
    run = run_cloud("azure", stack_settings("azure", stack))
    return Rbac(assignments(run), definitions()), containers(run)


def main(argv: list[str] | None = None) -> int:
    """Command line: one proxy per ``--principal`` in front of Azurite on ``--upstream-port`` with ``--stack``'s
    role assignments; writes ``RBAC_CONNECTION_STRING_<PRINCIPAL>='...'`` lines (shell syntax, the principal
    upper-cased, ``-``/``:`` as ``_``) to ``--env-out`` once every proxy listens, appends each decision to
    ``--log`` (JSON lines) and serves until SIGTERM / SIGINT. Exit code 0 after a signal."""
    ap = argparse.ArgumentParser(prog="azurite_rbac", description=main.__doc__)
    ap.add_argument("--upstream-port", type=int, required=True)
    ap.add_argument("--stack", default="dev")
    ap.add_argument("--principal", action="append", required=True)
    ap.add_argument("--key", required=True, help="Azurite's account key (for the connection strings)")
    ap.add_argument("--env-out", type=Path, required=True)
    ap.add_argument("--log", type=Path, required=True)
    args = ap.parse_args(argv)
    rbac, names = stack_model(args.stack)
    proxies = [RbacProxy(args.upstream_port, rbac, names, p, log=args.log).start() for p in args.principal]
    lines = [f"RBAC_CONNECTION_STRING_{_env_name(p.principal)}='{p.connection_string(args.key)}'" for p in proxies]
    tmp = args.env_out.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(args.env_out)  # the file appears whole, once every proxy listens
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    for p in proxies:
        p.stop()
    return 0


def _env_name(principal: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in principal).upper()


__all__ = ["Check", "RbacProxy", "Unmapped", "decide", "denial", "main", "operation_of", "stack_model"]

if __name__ == "__main__":  # PYTHONPATH=<repo>:<repo>/tests python tests/infra/azurite_rbac.py ... (one proxy per identity, for a shell)
    raise SystemExit(main())
