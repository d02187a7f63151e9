"""What the incident pages and API share: the service's settings, built once by the app."""

from __future__ import annotations

from contacts.core.services import services
from contacts.incidents.desk import CommsDesk
from contacts.vault import service as vault_service
from contacts.vault.service import Vault


def desk() -> CommsDesk:
    return services().get(CommsDesk)


def vault() -> vault_service.Vault:
    """The vault the updates' recipients are read from (through its service)."""
    return services().get(Vault)
