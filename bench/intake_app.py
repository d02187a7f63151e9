"""The real Lifeline app plus one bare endpoint, served by gunicorn for bench/intake.py.

POST /api/v1/bench/bare answers 202 with an empty body. It sits under the API prefix so it
passes through the same hooks as POST /api/v1/requests (access check, JSON body check, no
CSRF, security headers): the difference between the two is the intake's own work.
"""

from __future__ import annotations

from contacts.app import create_app
from contacts.core.access import public
from contacts.core.api import API_PREFIX

app = create_app()


@app.post(API_PREFIX + "/bench/bare")
@public
def bare():
    return "", 202
