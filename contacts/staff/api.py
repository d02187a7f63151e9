"""JSON API of the staff area: a machine client can see which token it acts with."""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, g
from pydantic import BaseModel, Field

from contacts.core.api import API_PREFIX, from_row, operation
from contacts.core.db import request_session
from contacts.staff import service

bp = Blueprint("staff_api", __name__, url_prefix=API_PREFIX)


class TokenInfo(BaseModel):
    id: str = Field(description="The token's ID (tok_...).")
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


@bp.get("/token")
@operation(scope="read", response=TokenInfo, tags=("tokens",))
def current_token():
    """The API token this request is authenticated with."""
    token = service.get_token(session=request_session(), token_id=g.actor.id)
    return from_row(TokenInfo, token, scopes=token.scope_list)
