"""The one-click unsubscribe link of subscribers' emails (RFC 8058): the mailbox provider's
POST, with no cookie and no CSRF token (the signed URL is the proof), stops the
subscription; a GET (a link scanner, or a reader) only shows the button that POSTs."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from contacts.core.access import public, without_csrf
from contacts.core.db import request_session, utcnow
from contacts.core.errors import Invalid
from contacts.core.forms import form_errors
from contacts.incidents import subscriptions
from contacts.incidents.web import desk

bp = Blueprint("unsubscribe", __name__)
ONE_CLICK = ("List-Unsubscribe", "One-Click")  # the body a provider posts (RFC 8058 3.1)


@bp.route("/status/unsubscribe/<int:subscriber_id>/<token>", methods=["GET", "POST"])
@public
@without_csrf
def one_click(subscriber_id: int, token: str):
    done, error = False, None
    with form_errors(catching=(Invalid,)) as refused:
        if request.method == "GET":
            subscriptions.check_unsubscribe_token(desk(), subscriber_id, token)
        elif request.form.get(ONE_CLICK[0]) != ONE_CLICK[1]:
            raise Invalid("A one-click unsubscribe posts List-Unsubscribe=One-Click.")
        else:
            subscriptions.unsubscribe_in_one_click(
                session=request_session(), desk=desk(), subscriber_id=subscriber_id,
                token=token, now=utcnow())
            done = True
    if refused:
        done, error = False, refused.message
    return render_template("public/unsubscribe.html", done=done, error=error,
                           field=ONE_CLICK), refused.status if refused else 200
