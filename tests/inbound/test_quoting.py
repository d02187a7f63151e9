"""What a reply shows: the person's words, without the history they quoted or their
signature, in the layouts of the common mail clients in English and French."""

from __future__ import annotations

import pytest

from contacts.inbound.quoting import shown
from tests.inbound.samples import eml, parsed


@pytest.mark.parametrize(("fixture", "expected"), [
    ("reply_thunderbird_en", "Hello"),  # bottom-posted under "On ..., ... wrote:"
    ("reply_apple_mail_en", "Hello"),
    ("reply_outlook", "Hello"),
    ("reply_thunderbird_fr", "Bonjour,\n\nLe service est revenu chez nous depuis ce matin, "
                             "merci pour le suivi.\nPouvez-vous fermer le ticket ?"),
])
def test_real_replies_show_only_what_was_written(fixture, expected):
    assert parsed(eml(fixture)).shown == expected


def test_gmail_wraps_its_attribution_over_two_lines():
    text = ("Thanks, all good now.\n\nOn Mon, Nov 15, 2021 at 7:42 PM John - Acme <\n"
            "john@acme.example> wrote:\n\n> The service is back.\n")
    assert shown(text) == "Thanks, all good now."
    french = ("Merci, c'est réglé.\n\nLe lun. 15 nov. 2021 à 19:42, John - Acme "
              "<john@acme.example>\na écrit :\n\nLe service est revenu.\n")
    assert shown(french) == "Merci, c'est réglé."


def test_outlook_blocks_in_english_and_french_end_what_is_shown():
    assert shown("Sure, call me.\n\n-----Original Message-----\nFrom: Ops\nSent: Monday\n"
                 "To: me\nSubject: Outage\n\nDetails") == "Sure, call me."
    assert shown("Sure.\n\n________________________________\nFrom: Ops <ops@example.org>\n"
                 "Sent: Monday, 3 March 2025 10:00\nTo: me\nSubject: Outage\n\nold") == "Sure."
    assert shown("D'accord.\n\nDe : Ops <ops@example.org>\nEnvoyé : lundi 3 mars 2025 10:00\n"
                 "À : moi\nObjet : Panne\n\nancien texte") == "D'accord."
    assert shown("Ok\n\n-----Message d'origine-----\nDe : Ops\n\nvieux") == "Ok"


def test_interleaved_answers_are_kept_between_the_quotes():
    text = ("On Tue, Ops wrote:\n> Is it back?\nYes, since 9:00.\n> Any data lost?\n"
            "None.\n\n-- \nAlex\n")
    assert shown(text) == "Yes, since 9:00.\nNone."


def test_a_from_line_in_the_persons_own_text_is_kept():
    text = "From: my side it works again.\nThanks"
    assert shown(text) == text


def test_something_is_always_shown_when_something_was_written():
    assert shown("> only what they quoted\n> nothing else") == (
        "> only what they quoted\n> nothing else")
    assert shown("-- \nAlex") == "--\nAlex"
    assert shown("On Tue, Ops wrote:\n> x") == "On Tue, Ops wrote:"
    assert shown("") == ""
    assert shown("   \n\n ") == ""
