"""Roles, permissions and token models."""

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, Field

from control_plane.core.audit_log import AuditContext


class Role(StrEnum):
    """What a bearer token is for.

    ``bootstrap`` tokens only register agents (a node already known only with an admin's
    approval), and may be scoped to a zone and site, which then confirms where the nodes
    they register stand; ``agent`` tokens are minted at registration and bound to one node.
    """

    ADMIN = "admin"
    OPERATOR = "operator"
    AUDITOR = "auditor"
    BOOTSTRAP = "bootstrap"
    AGENT = "agent"


class Permission(StrEnum):
    """One thing an API caller may do; routes require exactly one."""

    INVENTORY_READ = "inventory:read"
    INVENTORY_WRITE = "inventory:write"
    AUDIT_READ = "audit:read"
    #: Sign a checkpoint of the audit chain on demand (admins; beat signs them anyway).
    AUDIT_SIGN = "audit:sign"
    AGENT_REGISTER = "agent:register"
    AGENT_HEARTBEAT = "agent:heartbeat"
    REGISTRY_WRITE = "registry:write"
    POLICY_WRITE = "policy:write"
    WORKLOAD_WRITE = "workload:write"


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    # Operators run workloads: submit, release and renew them.
    Role.OPERATOR: frozenset({Permission.INVENTORY_READ, Permission.WORKLOAD_WRITE}),
    Role.AUDITOR: frozenset({Permission.INVENTORY_READ, Permission.AUDIT_READ}),
    Role.BOOTSTRAP: frozenset({Permission.AGENT_REGISTER}),
    # An agent may heartbeat for, and re-register, only its own node: the heartbeat route
    # and registration check which.
    Role.AGENT: frozenset({Permission.AGENT_HEARTBEAT, Permission.AGENT_REGISTER}),
}


class Principal(BaseModel):
    """The authenticated caller of a request.

    ``zone`` and ``site`` are a bootstrap token's scope: the only place the nodes it
    registers may claim to stand (None: unscoped, so those nodes wait for an admin).
    """

    token_id: UUID
    name: str
    role: Role
    node_id: UUID | None = None
    zone: str | None = None
    site: str | None = None

    def can(self, permission: Permission) -> bool:
        """Whether this caller's role grants ``permission``."""
        return permission in ROLE_PERMISSIONS[self.role]

    def audit_context(self, request_id: str | None) -> AuditContext:
        """The actor this caller appears as in the audit log."""
        return AuditContext(
            actor_id=f"token:{self.token_id}", actor_name=self.name, request_id=request_id
        )


class TokenPublic(BaseModel):
    """A stored token, without its secret."""

    id: UUID
    name: str
    role: Role
    token_prefix: str
    node_id: UUID | None
    zone: str | None = Field(
        default=None, description="A bootstrap token's zone scope: its nodes stand there."
    )
    site: str | None = Field(default=None, description="A bootstrap token's site scope.")
    created_by: str
    created_at: datetime
    revoked_at: datetime | None


class IssuedToken(BaseModel):
    """A token just created: the only time its secret is shown."""

    token: str
    info: TokenPublic
