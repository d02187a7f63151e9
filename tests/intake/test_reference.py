"""References: 8 letters of a 32-letter alphabet, every position drawing on all of it."""

from collections import Counter

from contacts.intake.service import REFERENCE_ALPHABET, new_reference, normalize_reference


def test_every_position_of_a_reference_uses_the_whole_alphabet_evenly():
    references = [new_reference() for _ in range(20_000)]
    assert len(set(references)) == len(references)
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
