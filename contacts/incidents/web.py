"""What the incident pages and API share: the service's settings, from the app."""

from __future__ import annotations

from pathlib import Path

from flask import current_app

from contacts.incidents import service


def desk() -> service.Desk:
    return service.Desk.from_settings(current_app.extensions["lifeline.settings"],
                                      current_app.extensions["lifeline.crypto"],
                                      Path(current_app.template_folder))
