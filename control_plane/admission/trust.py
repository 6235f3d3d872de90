"""Who may call the webhooks: the TLS client certificate, checked before the body is read.

With ``SOVEREIGN_ADMISSION__CLIENT_CA_FILE`` set, ``sovctl serve-webhooks`` requires a
client certificate from that CA in the TLS handshake, and the listener's protocol hands
the verified certificate to the app (``core.client_certs``). Here it becomes the
``WebhookCaller`` each decision records, and is checked again: a request that arrives
without a verified certificate while one is required (a server that did not pass it on,
a misconfigured deployment) is refused, never heard as anonymous — the webhooks fail
closed. ``SOVEREIGN_ADMISSION__CLIENT_NAMES`` narrows a CA that signs other
certificates too to the names allowed to call.
"""

from collections.abc import Mapping
from typing import Any

from control_plane.admission.models import WebhookCaller
from control_plane.core.client_certs import peer_certificate
from control_plane.core.errors import PermissionDeniedError
from control_plane.core.settings import AdmissionSettings

UNAUTHENTICATED = WebhookCaller(authentication="none")


def webhook_caller(scope: Mapping[str, Any], settings: AdmissionSettings) -> WebhookCaller:
    """The request's verified caller; ``PermissionDeniedError`` when it may not call.

    Without a client CA nobody is asked for a certificate, so every caller is
    ``authentication: none``, even one that happened to present a certificate.
    """
    if settings.client_ca_file is None:
        return UNAUTHENTICATED
    try:
        certificate = peer_certificate(scope)
    except ValueError:
        # OpenSSL verified it, but it does not parse as X.509 here (or the scope's chain
        # is not PEM): not one we can name, so not one that may call.
        certificate = None
    if certificate is None:
        raise PermissionDeniedError(
            "the admission webhooks require a client certificate"
            " (SOVEREIGN_ADMISSION__CLIENT_CA_FILE) and this connection carried none",
            details={"setting": "SOVEREIGN_ADMISSION__CLIENT_CA_FILE"},
        )
    allowed = settings.client_names
    if allowed and not set(certificate.names) & set(allowed):
        raise PermissionDeniedError(
            f"the client certificate {certificate.subject} is not one allowed to call the"
            " admission webhooks (SOVEREIGN_ADMISSION__CLIENT_NAMES)",
            details={
                "setting": "SOVEREIGN_ADMISSION__CLIENT_NAMES",
                "subject": certificate.subject,
            },
        )
    return WebhookCaller(
        authentication="client_certificate",
        subject=certificate.subject,
        serial=certificate.serial,
        sha256=certificate.sha256,
    )
