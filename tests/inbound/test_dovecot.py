"""The tests' own Dovecot: when it cannot start, the error says why, with its log."""

from __future__ import annotations

import pytest

from tests.inbound import dovecot as helper


def test_a_dovecot_that_cannot_start_fails_with_its_log(dovecot_server, monkeypatch, tmp_path):
    monkeypatch.setattr(helper, "_configuration", lambda server: "protocols = imap\nnonsense {\n")
    with pytest.raises(helper.DovecotFailed) as failed:
        helper.start_dovecot(tmp_path / "broken")
    assert str(failed.value).startswith("Dovecot did not start: ")
    assert "dovecot.conf" in str(failed.value)  # Dovecot's own words about its configuration
