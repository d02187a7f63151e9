"""What the incident pages and API share: the service's settings, built once by the app."""

from __future__ import annotations

from flask import current_app

from contacts.incidents.desk import Desk
from contacts.vault import service as vault_service


def desk() -> Desk:
    return current_app.extensions["lifeline.incidents"]


def vault() -> vault_service.Vault:
    """The vault the updates' recipients are read from (through its service)."""
    return current_app.extensions["lifeline.vault"]
