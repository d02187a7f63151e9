"""Field encryption and blind indexes."""

import os

import pytest

from contacts.core.crypto import BlindIndex, DecryptionFailed, FieldCipher, normalize_email
from contacts.core.errors import Invalid

OLD = ("k1", os.urandom(32))
NEW = ("k2", os.urandom(32))


def test_a_field_round_trips_and_leaves_no_plaintext():
    cipher = FieldCipher((OLD,))
    stored = cipher.encrypt("ada@example.com", context="staff.email")
    assert "ada" not in stored and stored.startswith("k1.")
    assert cipher.decrypt(stored, context="staff.email") == "ada@example.com"


def test_the_same_value_encrypts_differently_each_time():
    cipher = FieldCipher((OLD,))
    assert cipher.encrypt("x", context="c") != cipher.encrypt("x", context="c")


def test_a_ciphertext_moved_to_another_column_does_not_decrypt():
    cipher = FieldCipher((OLD,))
    stored = cipher.encrypt("ada@example.com", context="staff.email")
    with pytest.raises(DecryptionFailed):
        cipher.decrypt(stored, context="contact.name")


def test_a_tampered_ciphertext_is_refused():
    cipher = FieldCipher((OLD,))
    stored = cipher.encrypt("ada@example.com", context="c")
    flipped = stored[:-2] + ("A" if stored[-2] != "A" else "B") + stored[-1]
    with pytest.raises(DecryptionFailed):
        cipher.decrypt(flipped, context="c")


def test_after_rotation_old_fields_still_decrypt_and_new_ones_use_the_new_key():
    before = FieldCipher((OLD,)).encrypt("ada", context="c")
    rotated = FieldCipher((OLD, NEW))
    assert rotated.decrypt(before, context="c") == "ada"
    assert rotated.needs_reencryption(before)
    after = rotated.encrypt("ada", context="c")
    assert after.startswith("k2.") and not rotated.needs_reencryption(after)


def test_a_field_under_an_unknown_key_is_refused():
    stored = FieldCipher((NEW,)).encrypt("ada", context="c")
    with pytest.raises(DecryptionFailed, match="unknown key id 'k2'"):
        FieldCipher((OLD,)).decrypt(stored, context="c")


def test_blind_index_matches_however_the_address_is_typed():
    index = BlindIndex(os.urandom(32))
    assert index.email("Ada@Example.COM ") == index.email("ada@example.com")
    assert index.email("ada@bücher.example") == index.email("ADA@xn--bcher-kva.example")
    assert index.email("ada@example.com") != index.email("ada@example.org")


def test_blind_index_depends_on_its_key():
    assert BlindIndex(os.urandom(32)).email("a@b.c") != BlindIndex(os.urandom(32)).email("a@b.c")


def test_email_normalization_rejects_what_is_not_an_address():
    with pytest.raises(Invalid):
        normalize_email("no-at-sign")
    assert normalize_email("A@B.Example.") == "a@b.example"
