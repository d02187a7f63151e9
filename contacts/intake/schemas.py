"""What the public form and POST /api/v1/requests accept, and what they answer."""

from __future__ import annotations

from typing import Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, field_validator

MESSAGE_CHARS = 10_000

Severity = Literal["critical", "high", "normal", "low"]


class RequestIn(BaseModel):
    """A support request. Only `email` and `message` are required: no login, no valid site."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    email: str = Field(max_length=254, description="Where we can reach you.")
    message: str = Field(min_length=1, max_length=MESSAGE_CHARS,
                         description="What is wrong, in your words. Kept as plain text.")
    name: str | None = Field(default=None, max_length=200)
    company: str | None = Field(default=None, max_length=200)
    site: str | None = Field(default=None, max_length=500,
                             description="The site as you remember it: a URL or a name. It "
                                         "may no longer exist.")
    phone: str | None = Field(default=None, max_length=40)
    severity: Severity = Field(default="normal", description="How bad it is.")

    @field_validator("email")
    @classmethod
    def email_address(cls, value: str) -> str:
        try:
            return validate_email(value, check_deliverability=False).normalized
        except EmailNotValidError:
            raise ValueError("enter an email address like name@example.com") from None

    @field_validator("name", "company", "site", "phone")
    @classmethod
    def blank_is_none(cls, value: str | None) -> str | None:
        return value or None


class RequestAccepted(BaseModel):
    """The same answer, field for field, whoever is asking."""

    reference: str = Field(description="Quote it to support, e.g. LL-7KQ2-9XHD.")
    status: Literal["received"] = "received"
    message: str = Field(description="What happens next.")


ACCEPTED_MESSAGE = ("We have your request. We sent an email with a code to confirm your "
                    "address and a link to follow your request.")
