"""What the ``sovctl`` commands that use the database directly, not the API, share.

Server setup, tokens, demo seeding and ``audit verify`` work before any API token exists,
so they connect with the settings' database URL and record this host's user as the actor.
"""

import getpass
import socket

from control_plane.core.audit_log import AuditContext


def cli_actor() -> AuditContext:
    """The audit actor for commands run directly against the database: ``cli:user@host``."""
    user = getpass.getuser()
    return AuditContext(actor_id=f"cli:{user}@{socket.gethostname()}", actor_name=user)
