"""API models of the policy store: stored policy versions and the policy sets made active.

They live apart from ``models.py`` because that module is the pure engine's vocabulary,
kept free of anything about storage or time (a unit test checks it). A policy version is
one validated document under its name and number; a policy set is a list of
``name@version`` members, numbered 1, 2, 3, ... in the order they were activated. The set
with the highest version is the active one.
"""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, Field

from control_plane.domain.decisions import EnforcementAction
from control_plane.domain.types import Description, Input, Slug
from control_plane.policy.models import PolicyDocument

#: A policy or policy-set version number: 1, 2, 3, ... (PostgreSQL ``integer``).
VersionNumber = Annotated[int, Field(ge=1, le=2**31 - 1)]


class PolicyVersionPublic(BaseModel):
    """One stored version of a policy, with its document."""

    name: str
    version: int
    content_hash: str = Field(description="SHA-256 of the document's canonical JSON.")
    created_at: datetime
    created_by: str
    active: bool = Field(description="Whether this version is a member of the active set.")
    document: PolicyDocument


class PolicySummary(BaseModel):
    """A policy's latest version, and which of its versions the active set enforces."""

    name: str
    version: int = Field(description="The latest version.")
    content_hash: str
    created_at: datetime
    created_by: str
    description: str
    enforcement_action: EnforcementAction
    active_version: int | None = Field(
        description="The version in the active set; null when the policy is not in it."
    )
    active: bool = Field(description="Whether the latest version is the one enforced.")


class AppliedPolicy(BaseModel):
    """What applying one document did: stored a new version, or found it unchanged."""

    name: str
    version: int = Field(description="The new version, or the latest one when unchanged.")
    content_hash: str
    created: bool = Field(
        description="False when the document equals the latest version, which is kept."
    )


class PolicySetMember(Input):
    """One policy of a set, at a version."""

    name: Slug
    version: VersionNumber


class PolicySetPublic(BaseModel):
    """A policy set as activated: its members, content hash and who made it active.

    Version 0 is the empty set in force before anything was activated; it has no
    ``activated_at`` or ``activated_by``.
    """

    version: int
    content_hash: str = Field(description="SHA-256 of the members' documents, by name.")
    members: list[PolicySetMember] = Field(description="By name.")
    activated_at: datetime | None
    activated_by: str | None
    note: str
    previous_version: int | None = Field(description="The set active until this one.")
    restores_version: int | None = Field(
        description="For a rollback: the earlier set whose members this one restores."
    )


class PolicySetRef(BaseModel):
    """A policy set by version and content hash."""

    version: int
    content_hash: str


class PolicySetPage(BaseModel):
    """A page of policy sets, newest first, and how many there are."""

    items: list[PolicySetPublic]
    total: int
    limit: int
    offset: int


class MemberChoice(Input):
    """A policy to put in a set; without ``version``, its latest version."""

    name: Slug
    version: VersionNumber | None = None


class PolicySetActivate(Input):
    """Which set to make active.

    Without ``members``: the latest version of every stored policy. ``without`` then
    leaves policies out by name.
    """

    members: list[MemberChoice] | None = Field(default=None, max_length=1000)
    without: list[Slug] = Field(default_factory=list, max_length=1000)
    note: Description = ""


class PolicySetRollback(Input):
    """Make an earlier set's members active again, as a new set.

    Without ``to_version``: the set that was active before the current one.
    """

    to_version: VersionNumber | None = None
    note: Description = ""


class MemberSource(StrEnum):
    """Where a candidate set's member comes from: the store, or the documents proposed."""

    STORED = "stored"
    CANDIDATE = "candidate"


class CandidateMember(BaseModel):
    """One policy of a candidate set: a stored version, or a proposed document."""

    name: str
    version: int | None = Field(description="The stored version; null for a proposed document.")
    source: MemberSource


# -- rows as the repository hands them over ---------------------------------------------


class StoredVersion(BaseModel):
    """One stored version of a policy, without its document."""

    name: str
    version: int
    content_hash: str
    created_at: datetime
    created_by: str


class StoredDocument(StoredVersion):
    """One stored version of a policy with its document, as stored (validated when applied)."""

    document: dict[str, Any]


class MemberDocument(BaseModel):
    """A policy set member's stored document."""

    name: str
    version: int
    document: dict[str, Any]


# -- what audit events of the policy store hold (docs/audit.md) -----------------------


class PolicyVersionRef(BaseModel):
    """A policy version by name, number and content hash."""

    name: str
    version: int
    content_hash: str


class PolicyApplied(PolicyVersionRef):
    """A policy version just stored, with its document and the set still enforced."""

    document: PolicyDocument
    active_policy_set: PolicySetRef


class PolicySetMembers(PolicySetRef):
    """A policy set with its members: what an activation replaces."""

    members: list[PolicySetMember]


class PolicySetActivated(PolicySetMembers):
    """A policy set just made active, why, and which earlier set it restores if any."""

    note: str
    restores_version: int | None
