"""Typed IDs: an ID of one kind is never taken for another."""

import time

import pytest

from contacts.core.errors import Invalid, WrongKind
from contacts.core.ids import kind_of, new_id, parse_id


def test_new_ids_carry_their_kind_and_sort_by_creation():
    first = new_id("site")
    time.sleep(0.005)
    second = new_id("site")
    assert first.startswith("site_") and len(first) == len("site_") + 26
    assert kind_of(first) == "site"
    assert first[:15] < second[:15]  # the time part orders them
    assert len({new_id("site") for _ in range(1000)}) == 1000


def test_a_site_id_given_where_an_app_id_is_expected_is_refused_by_name():
    site = new_id("site")
    with pytest.raises(WrongKind) as caught:
        parse_id(site, "app")
    assert caught.value.message == "expected an app ID (app_...), got a site ID (site_...)"
    assert caught.value.details == {"expected": "app", "got": "site"}


@pytest.mark.parametrize("value", ["", "app_", "app_short", "xyz_01m8bq70k0y2nthpm9ammtm0jp",
                                   "APP_01M8BQ70K0Y2NTHPM9AMMTM0JP", 42, None])
def test_malformed_ids_are_refused(value):
    with pytest.raises(Invalid):
        parse_id(value, "app")


def test_a_well_formed_id_of_the_right_kind_passes():
    account = new_id("acc")
    assert parse_id(f" {account} ", "acc") == account
