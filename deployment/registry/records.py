"""Approval records: the decisions on a model version, one immutable document each, written by the approver.

A tag on a model version can be set by every identity that may write the version (on Azure ML the
trainer, the registrar and the deployer all hold AzureML Data Scientist). A record is different:

- it lives where only the approver identity may write (Azure: the stack's ``approvals`` container,
  Storage Blob Data Contributor for the approver only, blob versioning on; locally: a folder under
  ``DETOPS_HOME``), and every other identity may at most read it;
- each transition is a new document ``<root>/<model>/<version>/<NNNN>.json`` created only if that name
  does not exist (:func:`training.storage.create_bytes`: ``O_EXCL`` locally, ``If-None-Match: *`` on
  S3 and Azure Blob), so a record is never rewritten and of two people deciding at once exactly one
  wins -- the other gets :class:`training.errors.ConflictError` (exit 8) naming the decision that won;
- it carries the artifact digest the decision was about, so a version whose files (and so digest)
  are not the approved ones is not Approved.

Document (JSON, UTF-8)::

    {"seq": 0, "model": "bccd-detector", "version": "3", "action": "approve",
     "from": "PendingManualApproval", "to": "Approved", "artifact_sha256": "<hex>",
     "registrant_id": "<principal id>", "principal": {"id": ..., "name": ..., "source": ...},
     "at": "2026-12-07T16:00:00+00:00", "comment": "reviewed the PR curves"}

The status of a version is the ``to`` of its last record when that record's ``artifact_sha256`` is
the version's; with no record it is ``PendingManualApproval`` (:func:`status_of`).

Registration record (where the registry records registrations, :attr:`ModelRegistry.records_registration`):
``<root>/<model>/<version>/registration.json``, created once by ``register`` (create-only, like a decision)::

    {"model": "bccd-detector", "version": "3", "principal": {"id": ..., "name": ..., "source": ...},
     "artifact_sha256": "<hex>", "at": "2026-12-07T15:00:00+00:00"}

Four-eyes reads the registrant from it, never from the version's ``registered_by.id`` tag (which anyone
who may write the tracking server can rewrite).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from deployment.registry.base import ApprovalStatus, AuditEntry
from training import storage
from training.errors import ConflictError, DataError


@dataclass(frozen=True)
class ApprovalRecord:
    """One decision (module docstring for the fields; ``at`` is ISO 8601 UTC)."""

    seq: int
    model: str
    version: str
    action: str
    from_status: str
    to_status: str
    artifact_sha256: str
    registrant_id: str
    principal: dict[str, str] = field(default_factory=dict)
    at: str = ""
    comment: str = ""

    def to_json(self) -> dict[str, Any]:
        """The stored document (``from`` / ``to`` spelled as in the module docstring)."""
        d = asdict(self)
        d["from"], d["to"] = d.pop("from_status"), d.pop("to_status")
        return d

    @classmethod
    def from_json(cls, doc: Any, where: str) -> ApprovalRecord:
        """Parse a stored document. Raises :class:`DataError` naming ``where`` when it is malformed."""
        try:
            return cls(int(doc["seq"]), str(doc["model"]), str(doc["version"]), str(doc["action"]),
                       str(ApprovalStatus(doc["from"]).value), str(ApprovalStatus(doc["to"]).value),
                       str(doc["artifact_sha256"]), str(doc["registrant_id"]), dict(doc.get("principal") or {}),
                       str(doc.get("at", "")), str(doc.get("comment", "")))
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{where}: not an approval record ({type(e).__name__}: {e})") from e


#: Name of the registration record in a version's folder (not one of the numbered decisions).
REGISTRATION_FILE = "registration.json"


@dataclass(frozen=True)
class RegistrationRecord:
    """Who registered a version and the artifact digest they registered (module docstring; ``at`` ISO 8601 UTC)."""

    model: str
    version: str
    principal: dict[str, str]
    artifact_sha256: str
    at: str = ""

    @classmethod
    def from_json(cls, doc: Any, where: str) -> RegistrationRecord:
        """Parse a stored document. Raises :class:`DataError` naming ``where`` when it is malformed."""
        try:
            principal = dict(doc["principal"])
            if not str(principal.get("id", "")).strip():
                raise ValueError("principal.id is empty")
            return cls(str(doc["model"]), str(doc["version"]), principal, str(doc["artifact_sha256"]),
                       str(doc.get("at", "")))
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{where}: not a registration record ({type(e).__name__}: {e})") from e


class ApprovalRecords:
    """The records of every model version under ``root`` (a local folder, ``az://`` or ``s3://`` URL)."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")

    def _folder(self, name: str, version: str) -> str:
        return storage.join(self.root, name, str(version))

    def list(self, name: str, version: str) -> list[ApprovalRecord]:
        """The records of ``name`` version ``version``, in order (``seq`` 0, 1, ...).

        Raises:
            DataError: a record is malformed, or the sequence has a gap (a record was deleted).
        """
        folder = self._folder(name, version)
        fs, path = storage.filesystem(folder)
        fs.invalidate_cache(path)
        names = sorted(p.rsplit("/", 1)[-1] for p in (fs.ls(path, detail=False) if fs.exists(path) else []))
        out = []
        for i, fname in enumerate(n for n in names if n.endswith(".json") and n != REGISTRATION_FILE):
            url = storage.join(folder, fname)
            rec = ApprovalRecord.from_json(storage.read_json(url), url)
            if rec.seq != i or fname != f"{i:04d}.json":
                raise DataError(f"{url}: approval record {fname} out of sequence (expected {i:04d}.json): "
                                "a record was removed or renamed")
            out.append(rec)
        return out

    def append(self, record: ApprovalRecord) -> ApprovalRecord:
        """Create record ``record.seq`` of its version; it must be the next one.

        Raises:
            ConflictError: a record with that number exists already (someone decided first; the
                message names their decision). Nothing is written.
        """
        url = storage.join(self._folder(record.model, record.version), f"{record.seq:04d}.json")
        data = (json.dumps(record.to_json(), indent=2, sort_keys=True) + "\n").encode()
        try:
            storage.create_bytes(url, data)
        except FileExistsError as e:
            won = self.list(record.model, record.version)
            other = won[record.seq] if len(won) > record.seq else None
            who = f"{other.action} by {other.principal.get('name') or other.principal.get('id')} at {other.at}" if other else "another decision"
            raise ConflictError(
                f"model {record.model!r} version {record.version} was decided meanwhile ({who}); nothing was written: "
                "look again (detops models show) and run the command again if it still applies"
            ) from e
        return record


    def _registration_url(self, name: str, version: str) -> str:
        return storage.join(self._folder(name, version), REGISTRATION_FILE)

    def register(self, record: RegistrationRecord) -> RegistrationRecord:
        """Create the registration record of ``record``'s version (create-only: it is never rewritten).

        A record already there that names the same principal id and digest is returned (a killed
        ``register`` run again); ``record.at`` is then the stored one.

        Raises:
            ConflictError: a different registration record exists for that version; nothing is written.
        """
        url = self._registration_url(record.model, record.version)
        data = (json.dumps(asdict(record), indent=2, sort_keys=True) + "\n").encode()
        try:
            storage.create_bytes(url, data)
        except FileExistsError as e:
            old = self.registration(record.model, record.version)
            if old and old.principal.get("id") == record.principal.get("id") and old.artifact_sha256 == record.artifact_sha256:
                return old
            raise ConflictError(f"{url}: model {record.model!r} version {record.version} already has a registration "
                                "record by another principal or for other files; nothing was written") from e
        return record

    def registration(self, name: str, version: str) -> RegistrationRecord | None:
        """The registration record of ``name`` version ``version``, or None when there is none.

        Raises:
            DataError: the record is malformed.
        """
        url = self._registration_url(name, version)
        if not storage.exists(url):
            return None
        return RegistrationRecord.from_json(storage.read_json(url), url)


def record_entry(rec: ApprovalRecord) -> AuditEntry:
    """The audit-trail entry of a record (for registries that keep no copy of the decision)."""
    return AuditEntry(rec.principal.get("name") or rec.principal.get("id", ""), rec.at, rec.action, rec.comment,
                      {"principal": rec.principal, "from": rec.from_status, "to": rec.to_status,
                       "artifact_sha256": rec.artifact_sha256, "record": rec.seq})


def status_of(records: list[ApprovalRecord], artifact_sha256: str) -> ApprovalStatus:
    """The status the records give a version whose artifact digest is ``artifact_sha256``.

    The last record's ``to`` when it was about that digest; ``PendingManualApproval`` when there is no
    record; ``Rejected`` when the last decision was about other files (the artifact changed after it).
    """
    if not records:
        return ApprovalStatus.PENDING
    last = records[-1]
    if last.artifact_sha256 != artifact_sha256:
        return ApprovalStatus.REJECTED
    return ApprovalStatus(last.to_status)
