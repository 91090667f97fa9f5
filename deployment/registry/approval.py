"""The approval rules, once, above every :class:`~deployment.registry.base.ModelRegistry` adapter.

State machine (statuses spelled as SageMaker's ``ModelApprovalStatus``)::

    register --(quality gate passed, or --force by a person with a comment)--> PendingManualApproval
    PendingManualApproval --approve (by someone other than the registrant)--> Approved
    PendingManualApproval --reject--> Rejected
    Approved --reject (withdraw)--> Rejected
    Rejected is final: retrain and register a new version.

Every transition needs a non-empty identity and comment and is appended to the version's audit trail
(who, when in UTC, what, why). The registrant may not approve their own version unless the service
is built with ``allow_self_approval=True`` (``$DETOPS_ALLOW_SELF_APPROVAL=1``). Only an Approved
version can be deployed (:meth:`ApprovalService.require_approved`, called by
:mod:`deployment.deploy` above every deploy target).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from deployment.registry import artifact
from deployment.registry.base import ApprovalStatus, AuditEntry, ModelRegistry, ModelVersion
from deployment.registry.gate import GateDecision, evaluate_gate
from deployment.registry.identity import Principal, as_principal, aws_person, person_names
from deployment.registry.records import ApprovalRecord, RegistrationRecord, record_entry, status_of
from training import storage
from training.errors import ConfigError, GateError
from training.tracking import read_manifest, read_metrics

_ALLOWED = {
    ApprovalStatus.PENDING: {ApprovalStatus.APPROVED, ApprovalStatus.REJECTED},
    ApprovalStatus.APPROVED: {ApprovalStatus.REJECTED},
    ApprovalStatus.REJECTED: set(),
}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _require(value: str | None, what: str) -> str:
    value = (value or "").strip()
    if not value:
        raise ConfigError(f"{what} is required (a person's identity and a reason are audited)")
    return value


def _principal(by: str | Principal, what: str) -> Principal:
    p = as_principal(by)
    _require(p.id, what)
    return p


#: Tag holding the digest the export stage recorded for the files it evaluated (``artifact.sha256`` is
#: what registration hashed; register refuses the run when the two differ).
EXPORTED_DIGEST_TAG = "export.sha256"


def _evaluated_files(manifest: dict, run_url: str, export_url: str) -> tuple[dict[str, str], str, str]:
    """``(manifest of export/, its digest, the digest the export stage recorded)``.

    Raises:
        ArtifactIntegrityError: the files changed after the export stage evaluated them.
        GateError: the run recorded no digest.
    """
    files = artifact.compute_manifest(export_url)
    digest = artifact.manifest_digest(files)
    exported = _exported_digest(manifest, run_url)
    if digest != exported:
        raise artifact.ArtifactIntegrityError(
            f"{export_url} changed after it was exported and evaluated: its files hash to {digest[:12]}..., "
            f"the export stage recorded {exported[:12]}... (run.json); re-run `detops export` and evaluate again"
        )
    return files, digest, exported


def _exported_digest(manifest: dict, run_url: str) -> str:
    """``stages.export.artifact_sha256`` of ``run.json``. Raises GateError for a run exported without it."""
    export = (manifest.get("stages") or {}).get("export")
    digest = export.get("artifact_sha256") if isinstance(export, dict) else None
    if not digest:
        raise GateError(f"run {run_url}: run.json records no digest of the exported files (exported by an older "
                        "detops); re-run `detops export` so that what registers is what was evaluated")
    return str(digest)


#: Tag holding the registrant's principal id (compared by four-eyes; ``registered_by`` is the name).
REGISTRANT_ID_TAG = "registered_by.id"


def registrant_id(mv: ModelVersion) -> str:
    """The principal id the tags of ``mv`` name as registrant (falls back to ``registered_by`` for older
    versions). Where the registry records registrations, four-eyes uses :meth:`ApprovalService.registrant`."""
    return mv.tags.get(REGISTRANT_ID_TAG) or mv.registered_by


def _entry(p: Principal, action: str, comment: str, details: dict | None = None) -> AuditEntry:
    d = dict(details or {})
    d["principal"] = p.to_dict()
    return AuditEntry(p.name, _now(), action, comment, d)


def _version_key(v: ModelVersion) -> tuple[int, str]:
    return (int(v.version), v.version) if v.version.isdigit() else (10**12, v.version)


class ApprovalService:
    """Registration, approval and rejection of model versions, with the gate and the audit trail.

    Args:
        registry: the storage adapter (MLflow, SageMaker, ...).
        allow_self_approval: let the registrant approve their own version; default from
            ``$DETOPS_ALLOW_SELF_APPROVAL`` ("1"/"true"), else False.
    """

    def __init__(self, registry: ModelRegistry, allow_self_approval: bool | None = None) -> None:
        self.registry = registry
        if allow_self_approval is None:
            from training.settings import CommonSettings

            allow_self_approval = CommonSettings.load().allow_self_approval
        self.allow_self_approval = allow_self_approval

    # -- queries ---------------------------------------------------------------------------------
    def decided(self, mv: ModelVersion) -> tuple[ModelVersion, list[ApprovalRecord] | None]:
        """``mv`` with the status its approval records give (and, where the registry keeps no copy,
        their audit entries), and the records; ``(mv, None)`` where the registry's status is the guard."""
        store = self.registry.approval_records()
        if store is None:
            return mv, None
        recs = store.list(mv.name, mv.version)
        digest = mv.tags.get(artifact.DIGEST_TAG, "")
        mv.status = status_of(recs, digest)
        source = self.registry.promotion_source_records(mv.tags["promoted_from"]) if (
            not recs and mv.tags.get("promoted_from")) else None
        if source is not None:  # a promoted copy: Approved where the same bytes were approved (the source's record)
            src_store, src_name, src_version = source
            mv.status = status_of(src_store.list(src_name, src_version), digest)
        if not self.registry.mirrors_decisions:
            mv.audit = [*mv.audit, *(record_entry(r) for r in recs)]
        return mv, recs

    def get_version(self, name: str, version: str) -> ModelVersion:
        """One version, with the status its approval records give (:meth:`decided`)."""
        return self.decided(self.registry.get_version(name, str(version)))[0]

    def list_versions(self, name: str | None = None) -> list[ModelVersion]:
        """Every version (of ``name``), oldest first, each with the status its approval records give."""
        return [self.decided(v)[0] for v in self.registry.list_versions(name)]

    def current_approved(self, name: str) -> ModelVersion | None:
        """The newest Approved version of ``name`` (highest version number), or None."""
        approved = [v for v in self.list_versions(name) if v.status == ApprovalStatus.APPROVED]
        return max(approved, key=_version_key) if approved else None

    def require_approved(self, name: str, version: str) -> ModelVersion:
        """Return the version if it is Approved; else raise :class:`GateError` naming its status."""
        mv = self.get_version(name, str(version))
        if mv.status != ApprovalStatus.APPROVED:
            raise GateError(
                f"model {name!r} version {version} is {mv.status.value}; only Approved versions can be deployed"
            )
        return mv

    def registrant(self, mv: ModelVersion) -> str:
        """The principal id that registered ``mv``: from its registration record where the registry keeps
        them (:attr:`ModelRegistry.records_registration`), else from its tags (:func:`registrant_id`).

        Raises:
            GateError: the registry keeps registration records and ``mv`` has none (registered by an older
                detops, or its record was removed), or the record's principal id is not the one in the
                ``registered_by.id`` tag (the tag was rewritten): the registrant is unknown, so four-eyes
                cannot be checked.
        """
        if not self.registry.records_registration:
            return registrant_id(mv)
        rec = self.registry.approval_records().registration(mv.name, str(mv.version))
        if rec is None:
            raise GateError(f"model {mv.name!r} version {mv.version} has no registration record, so who registered "
                            "it is unknown and four-eyes cannot be checked: register the run again as a new version")
        tagged = mv.tags.get(REGISTRANT_ID_TAG, "")
        if rec.principal["id"] != tagged:
            raise GateError(f"model {mv.name!r} version {mv.version}: tag {REGISTRANT_ID_TAG}={tagged!r} disagrees with "
                            f"its registration record (registered by {rec.principal['id']!r}): the tag was rewritten; "
                            "it is refused for approval")
        return rec.principal["id"]

    def record_registration(self, mv: ModelVersion, who: Principal) -> None:
        """Write ``mv``'s create-only registration record (``who``, its ``artifact.sha256``) where the registry
        keeps them (:attr:`ModelRegistry.records_registration`); nothing otherwise.

        Raises:
            ConflictError: another registration record exists for that version.
        """
        if self.registry.records_registration:
            self.registry.approval_records().register(RegistrationRecord(
                mv.name, str(mv.version), who.to_dict(), mv.tags.get(artifact.DIGEST_TAG, ""), _now()))

    # -- the gate --------------------------------------------------------------------------------
    def gate(self, run_url: str, name: str, margin: float | None = None) -> GateDecision:
        """Evaluate the quality gate of run ``run_url`` against ``name``'s current Approved version."""
        base = self.current_approved(name)
        return evaluate_gate(run_url, base.version if base else None, base.metrics if base else None, margin)

    # -- transitions -----------------------------------------------------------------------------
    def register(
        self,
        run_url: str,
        name: str,
        by: str | Principal,
        *,
        margin: float | None = None,
        force: bool = False,
        comment: str = "",
        mlflow_run_id: str | None = None,
        reviewer: str | None = None,
    ) -> ModelVersion:
        """Register the export of a complete run as a new ``PendingManualApproval`` version.

        ``reviewer`` is the person who passed the CI job's human gate (the environment reviewer, not
        the merger nor the CI principal ``by``); it is kept as tag ``gate.reviewer`` and in the
        ``register`` audit entry.

        The version carries the run's metrics (``test/AP50`` ...), the dataset sha256, the code
        version, the run URL/id (and ``mlflow_run_id`` when the run was tracked) and the gate decision
        (tags ``gate.passed`` and ``gate.decision`` as JSON), the sha256 manifest of ``export/``
        (tags ``artifact.manifest`` and ``artifact.sha256``, :mod:`deployment.registry.artifact`; the
        manifest is also written as ``export/detops-manifest.json``) and the registrant's principal id
        (tag ``registered_by.id``). ``by`` is the authenticated principal
        (:func:`deployment.registry.identity.current_principal`); a plain string is a declared identity.
        Audit entries (each with the principal): ``gate`` (with the numbers), ``force`` when forced,
        then ``register``.

        Raises:
            ConfigError: ``by`` is empty, or ``force`` without a ``comment``.
            GateError: the run is not complete, is already registered under ``name``, or failed
                the gate without ``force``.
            NotFoundError / DataError: the run folder or its files are missing / malformed.
        """
        who = _principal(by, "--by (who registers)")
        if force:
            comment = _require(comment, "--comment (why the gate is forced)")
        manifest, export_url, run_id, half = self._registrable(run_url, name)
        decision = self.gate(run_url, name, margin)
        if not decision.passed and not force:
            raise GateError(f"quality gate failed for {run_url}: " + "; ".join(decision.reasons))

        files, digest, exported = _evaluated_files(manifest, run_url, export_url)
        storage.write_json(storage.join(export_url, artifact.MANIFEST_FILE), artifact.manifest_document(files))
        dataset = (manifest.get("inputs") or {}).get("dataset") or {}
        tags = {
            "run_id": run_id,
            "run_url": run_url,
            "dataset_sha256": str(dataset.get("sha256", "")),
            "code_version": str(manifest.get("code_version", "unknown")),
            "gate.passed": str(decision.passed).lower(),
            "gate.forced": str(bool(force and not decision.passed)).lower(),
            "gate.decision": json.dumps(decision.to_dict()),
            artifact.DIGEST_TAG: digest,
            EXPORTED_DIGEST_TAG: exported,
            artifact.MANIFEST_TAG: json.dumps(files, sort_keys=True, separators=(",", ":")),  # = manifest_tags()
            REGISTRANT_ID_TAG: who.id,
        }
        if mlflow_run_id:
            tags["mlflow_run_id"] = mlflow_run_id
        reviewer = (reviewer or "").strip() or None
        if reviewer:
            tags["gate.reviewer"] = reviewer
        # a register killed after creating the version is finished, not repeated (its audit shows how far it got)
        mv = half or self.registry.create_version(name, export_url, who.name, read_metrics(run_url), tags)
        self.record_registration(mv, who)
        done = {e.action for e in mv.audit}
        pending = ApprovalStatus.PENDING
        if "gate" not in done:
            self.registry.set_status(name, mv.version, pending, _entry(who, "gate", "", decision.to_dict()))
        if not decision.passed and "force" not in done:
            self.registry.set_status(name, mv.version, pending, _entry(who, "force", comment, {"reasons": decision.reasons}))
        return self.registry.set_status(
            name, mv.version, pending, _entry(who, "register", comment, {"run_url": run_url, "artifact_sha256": digest,
                                                    **({"reviewer": reviewer} if reviewer else {})})
        )

    def _registrable(self, run_url: str, name: str) -> tuple[dict, str, str, ModelVersion | None]:
        """run.json, the export URL and the run id of a run that may register under ``name``, and the
        version a killed registration of it left half-made (no ``register`` audit entry yet), if any.

        Raises GateError: the run is not complete, has no SavedModel, or is already registered."""
        manifest = read_manifest(run_url)
        if manifest.get("status") != "complete":
            raise GateError(f"run {run_url} has status {manifest.get('status')!r}; only complete runs register")
        export_url = storage.join(run_url, "export")
        if not storage.exists(storage.join(export_url, "saved_model")):
            raise GateError(f"run {run_url} has no export/saved_model; run `detops export` first")
        run_id = str(manifest.get("id") or run_url)
        for v in self.registry.list_versions(name):
            if v.tags.get("run_id") == run_id:
                if any(e.action == "register" for e in v.audit):
                    raise GateError(f"run {run_id} is already registered as {name!r} version {v.version}")
                return manifest, export_url, run_id, v
        return manifest, export_url, run_id, None

    def _transition(
        self, name: str, version: str, to: ApprovalStatus, by: str | Principal, comment: str, action: str
    ) -> ModelVersion:
        """Check and make one decision. With approval records, the decision is created as the next record
        (compare-and-set: if someone decided meanwhile, :class:`ConflictError` and nothing is written),
        then mirrored into the version where the registry keeps a copy."""
        who = _principal(by, "--by (who decides)")
        comment = _require(comment, "--comment (why)")
        mv, recs = self.decided(self.registry.get_version(name, str(version)))
        if to not in _ALLOWED[mv.status]:
            raise GateError(f"model {name!r} version {version} is {mv.status.value}; cannot {action} it")
        if to == ApprovalStatus.APPROVED and who.id == self.registrant(mv) and not self.allow_self_approval:
            raise GateError(
                f"{who.name!r} (principal {who.id}) registered model {name!r} version {version} and may not "
                "approve it (another principal must; set DETOPS_ALLOW_SELF_APPROVAL=1 only for a single-person setup)"
            )
        if to == ApprovalStatus.APPROVED and who.source == "aws":
            self._aws_four_eyes(mv, who)
        return self.decide(mv, recs, to, who, comment, action)

    def _aws_four_eyes(self, mv: ModelVersion, who: Principal) -> None:
        """On AWS the approver is a person (an IAM Identity Center session, :func:`aws_person`), not the person
        who let the registration through (tag ``gate.reviewer``, the ``model-registration`` reviewer's login)
        nor the person who registered (when a person's session registered); names compared by
        :func:`person_names` (lower-cased, an e-mail's local part too). Two CI roles always differ, so comparing
        principal ids alone says nothing about people (docs/contracts.md).

        Raises:
            GateError: ``who`` is not a person's session (a CI role's, an IAM user's), or is the gate's reviewer
                or the registrant (the last two allowed with ``allow_self_approval``).
        """
        person = aws_person(who)
        if person is None:
            raise GateError(
                f"{who.name} is not a person's session: on AWS a version is approved from an IAM Identity Center "
                "session (assumed-role/AWSReservedSSO_.../<user>), never a CI role's (docs/contracts.md)"
            )
        if self.allow_self_approval:
            return
        names = person_names(person)
        reviewer = mv.tags.get("gate.reviewer", "")
        if names & person_names(reviewer):
            raise GateError(
                f"{person} let model {mv.name!r} version {mv.version} through the registration gate (gate.reviewer "
                f"{reviewer!r}) and may not approve it too: another person must"
            )
        registrant = aws_person(Principal(self.registrant(mv), mv.registered_by, "aws"))
        if registrant and names & person_names(registrant):
            raise GateError(f"{person} registered model {mv.name!r} version {mv.version} and may not approve it")

    def decide(self, mv: ModelVersion, recs: list[ApprovalRecord] | None, to: ApprovalStatus, who: Principal,
               comment: str, action: str, details: dict | None = None) -> ModelVersion:
        """Record ``mv``'s move to ``to`` (no rule checked here: :meth:`approve`, :meth:`reject` and
        :func:`deployment.promote.promote` check first). ``recs`` are the records read when the rules were
        checked (None: the registry's status is the guard); the new record must follow them.

        Raises:
            ConflictError: someone decided after ``recs`` were read; nothing was written.
        """
        entry = _entry(who, action, comment, {**(details or {}), "from": mv.status.value, "to": to.value})
        if recs is not None:
            self.registry.approval_records().append(ApprovalRecord(
                len(recs), mv.name, str(mv.version), action, mv.status.value, to.value,
                mv.tags.get(artifact.DIGEST_TAG, ""), self.registrant(mv) if to == ApprovalStatus.APPROVED
                else registrant_id(mv), who.to_dict(), entry.at, comment))
            if not self.registry.mirrors_decisions:
                return self.get_version(mv.name, str(mv.version))
        return self.decided(self.registry.set_status(mv.name, str(mv.version), to, entry))[0]

    def approve(self, name: str, version: str, by: str | Principal, comment: str) -> ModelVersion:
        """PendingManualApproval -> Approved, by a principal other than the registrant (ids compared); audited."""
        return self._transition(name, version, ApprovalStatus.APPROVED, by, comment, "approve")

    def reject(self, name: str, version: str, by: str | Principal, comment: str) -> ModelVersion:
        """PendingManualApproval or Approved -> Rejected; audited."""
        return self._transition(name, version, ApprovalStatus.REJECTED, by, comment, "reject")
