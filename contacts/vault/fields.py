"""Checking and normalizing contact fields, and masking them for display."""

from __future__ import annotations

import re
from functools import cache
from urllib.parse import urlsplit
from zoneinfo import available_timezones

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE

from contacts.core.crypto import normalize_email
from contacts.core.errors import Invalid
from contacts.vault.models import ROLES

LOCALE = re.compile(r"^[a-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")
LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
HOSTNAME = re.compile(rf"^{LABEL}(?:\.{LABEL})*$")


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(available_timezones())


NOT_IN_ADDRESS = re.compile(r'[\s<>(),;:"\[\]]')
E164_LIKE = re.compile(r"\+[1-9]\d{6,14}")
PHONE_FORMATTING = re.compile(r"[\s\-.()/]")


def checked_email(value: str) -> str:
    """The address as stored (trimmed); raises Invalid when it is not an address."""
    value = value.strip()
    local, at, domain = value.rpartition("@")
    if len(value) > 320 or not local or not at or "." not in domain or NOT_IN_ADDRESS.search(
            value):
        raise Invalid("email is not a valid address")
    return value


def email_domain(address: str) -> str:
    return normalize_email(address).rpartition("@")[2]


def e164_phone(value: str, region: str) -> str:
    """The number in E.164; one written without its +country code is read as a number of
    `region` (the contact's country). Only a number valid for its country is taken: a French
    '06 12 34 56 78' read as American is refused, never stored as '+10612345678'."""
    fast = _international_number(value)
    if fast is not None:
        return fast
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        raise Invalid("phone is not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        if value.strip().startswith("+"):
            raise Invalid("phone is not a valid number of its country")
        raise Invalid(f"phone is not a valid number of {region} (write it with its +country "
                      "code, or give the contact's country)")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _international_number(value: str) -> str | None:
    """E.164 for a valid number already written with its +country code, without a full
    parse (imports are hot); None sends the value through phonenumbers.parse."""
    digits = PHONE_FORMATTING.sub("", value)
    if not E164_LIKE.fullmatch(digits):
        return None
    for length in (1, 2, 3):
        code = int(digits[1:1 + length])
        national = digits[1 + length:]
        if code in COUNTRY_CODE_TO_REGION_CODE and national and national[0] != "0":
            number = phonenumbers.PhoneNumber(country_code=code, national_number=int(national))
            return digits if phonenumbers.is_valid_number(number) else None
    return None


def checked_country(value: str | None) -> str | None:
    """An ISO 3166 alpha-2 country code, upper-cased, or None when not given."""
    if value is None or not value.strip():
        return None
    country = value.strip().upper()
    if country not in phonenumbers.SUPPORTED_REGIONS:
        raise Invalid(f"country must be an ISO 3166 code such as 'FR', got {value!r}")
    return country


def phone_region(country: str | None, locale: str, default_region: str) -> str:
    """Where a number without +country code is read: the contact's country, else the region
    of its locale ('fr-FR' -> FR, 'pt_BR' -> BR), else the vault's default region."""
    if country:
        return country
    for subtag in locale.replace("_", "-").split("-")[1:]:
        if len(subtag) == 2 and subtag.isalpha() and subtag.upper() in \
                phonenumbers.SUPPORTED_REGIONS:
            return subtag.upper()
    return default_region


def checked_role(value: str) -> str:
    role = value.strip().lower().replace(" ", "_").replace("-", "_")
    if role == "admin":
        role = "site_admin"
    if role not in ROLES:
        raise Invalid(f"role must be one of {', '.join(ROLES)}, got {value!r}")
    return role


def checked_locale(value: str) -> str:
    value = value.strip()
    if not LOCALE.match(value):
        raise Invalid(f"locale must look like 'en' or 'fr-FR', got {value!r}")
    return value.replace("_", "-")


def checked_timezone(value: str) -> str:
    value = value.strip()
    if value not in _time_zones():
        raise Invalid(f"timezone must be an IANA name such as 'Europe/Paris', got {value!r}")
    return value


def hostname_of(value: str | None) -> str | None:
    """The lower-case hostname of a URL or a bare host ('https://Acme.example/x')."""
    if not value or not value.strip():
        return None
    text = value.strip()
    if "://" not in text:
        text = "//" + text
    try:
        host = (urlsplit(text).hostname or "").strip(".")
        host = host.encode("idna").decode("ascii").lower() if host else ""
    except (ValueError, UnicodeError):
        return None
    return host if host and HOSTNAME.match(host) else None


def mask_email(address: str) -> str:
    local, _, domain = address.rpartition("@")
    return f"{local[:1]}***@{domain}"


def mask_phone(number: str | None) -> str | None:
    if not number:
        return None
    return number[:3] + "*" * max(len(number) - 5, 0) + number[-2:]


def mask_name(name: str) -> str:
    return " ".join(part[:1] + "***" for part in name.split())
