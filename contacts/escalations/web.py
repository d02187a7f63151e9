"""What the escalation pages and API share: the service's settings, built once by the app."""

from __future__ import annotations

from contacts.core.services import services
from contacts.escalations import service
from contacts.escalations.service import SupportDesk


def desk() -> service.SupportDesk:
    return services().get(SupportDesk)
