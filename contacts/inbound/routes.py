"""The console's page of one inbound email (support staff): the message as it came, its
text without the quoted history and in full, its HTML sanitized, its attachments (each
download in the audit log), and where it went. The sender's address is not shown: the
request or item it joined says who it is with, and reveals are audited there."""

from __future__ import annotations

from flask import Blueprint, Response, g, render_template

from contacts.core import audit
from contacts.core.access import staff
from contacts.core.db import request_session
from contacts.core.services import services
from contacts.inbound import store

bp = Blueprint("inbound", __name__)


@bp.get("/console/inbound/<message_id>")
@staff("support", "admin")
def message_page(message_id: str):
    view = store.message_view(session=request_session(), cipher=services().crypto.cipher,
                              message_id=message_id)
    return render_template("inbound/message.html", view=view)


@bp.get("/console/inbound/<message_id>/attachments/<int:number>")
@staff("support", "admin")
def attachment(message_id: str, number: int):
    session = request_session()
    name, content_type, data = store.attachment_bytes(
        session=session, cipher=services().crypto.cipher, message_id=message_id, number=number)
    audit.record(session, g.actor, "inbound.attachment_downloaded",
                 target_kind="inbound_message", target_id=message_id, attachment=number)
    # Always a download, never shown inline: an attachment is the sender's content.
    ascii_name = "".join(c for c in name if c.isascii() and c.isprintable() and c not in '"\\')
    return Response(data, mimetype="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{ascii_name or "attachment"}"',
        "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
        "X-Original-Content-Type": content_type})
