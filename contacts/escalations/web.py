"""What the escalation pages and API share: the service's settings, built once by the app."""

from __future__ import annotations

from flask import current_app

from contacts.escalations import service


def desk() -> service.Desk:
    return current_app.extensions["lifeline.escalations"]
