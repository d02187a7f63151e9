"""References: 8 letters of a 32-letter alphabet, every position drawing on all of it."""

from collections import Counter

from contacts.intake import references
from contacts.intake.references import REFERENCE_ALPHABET, new_reference, normalize_reference


def test_a_reference_spells_its_forty_random_bits_five_at_a_time(monkeypatch):
    # 00000 00001 00010 00011 00100 00101 00110 00111: the alphabet's first eight letters,
    # in order, so each position reads its own five bits.
    monkeypatch.setattr(references.secrets, "token_bytes", lambda size: bytes.fromhex("00443214c7"))
    assert new_reference() == "LL-2345-6789"


def test_every_position_of_a_reference_uses_the_whole_alphabet_evenly():
    references = [new_reference() for _ in range(20_000)]
    assert all(normalize_reference(reference) == reference for reference in references)
    for position in (3, 4, 5, 6, 8, 9, 10, 11):
        counts = Counter(reference[position] for reference in references)
        assert set(counts) == set(REFERENCE_ALPHABET)
        # 625 expected per letter; a position short of bits would leave letters at 0 or
        # double others.
        assert 450 < min(counts.values()) and max(counts.values()) < 800


def test_a_reference_typed_loosely_is_read_back():
    reference = new_reference()
    typed = reference.lower().replace("-", " ")
    assert normalize_reference(typed) == reference
