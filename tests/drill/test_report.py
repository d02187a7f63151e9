"""The drill's judgement and its plaintext scan, on their own (the whole drill runs in
test_drill.py)."""

from contacts.core.settings import load_settings
from contacts.drill.report import Report
from contacts.drill.run import scan_bytes


def test_the_scan_finds_names_emails_and_phones_wherever_they_are():
    values = ["Alice Martin", "alice.martin1@acme-1.drill.example", "+33612000001"]
    places = {"log": b'sent to "alice.martin1@acme-1.drill.example". Call +33612000001.',
              "backup": b"\x00\x17Alice Martin\x00", "database": b"ciphertext only"}

    scanned, hits, where = scan_bytes(values, places)

    assert hits == 3
    assert where == ["log (2)", "backup (1)"]
    assert scanned.startswith("3 distinct names, emails, phones and domains searched in 3 "
                              "places")
    assert scanned.endswith("MB: log, backup, database)")


def test_a_part_of_an_address_is_not_the_address():
    _, hits, _ = scan_bytes(["ada@acme.example"], {"log": b"mailto:xada@acme.example.org"})
    assert hits == 0


def test_one_missed_target_fails_the_drill_and_says_which():
    report = Report(requests_lost=1, admins_reached_pct=100.0, requests_matched_pct=100.0,
                    verified_pct=100.0, time_to_first_update_s=3.0, vault_restore_s=1.0,
                    plaintext_scanned="3 places", plaintext_hits=0)
    report.judge(load_settings())

    assert not report.all_targets_met
    assert [check.figure for check in report.checks if not check.met] == ["requests_lost"]
    assert "| `requests_lost` | 1 | ≤ 0 | **NO** |" in report.as_markdown()


def test_a_figure_that_could_not_be_measured_is_never_counted_as_met():
    report = Report(admins_reached_pct=100.0, requests_matched_pct=100.0, verified_pct=100.0,
                    time_to_first_update_s=None, vault_restore_s=1.0)
    report.judge(load_settings())

    assert not report.all_targets_met
    assert [check.figure for check in report.checks if not check.met] == [
        "time_to_first_update_s"]
    assert "plaintext_hits" not in {check.figure for check in report.checks}  # remote drill


def test_a_reply_that_missed_its_item_misses_the_inbound_target():
    report = Report(admins_reached_pct=100.0, requests_matched_pct=100.0, verified_pct=100.0,
                    time_to_first_update_s=3.0, vault_restore_s=1.0, inbound_run=True,
                    replies_sent=4, replies_threaded=3, replies_threaded_pct=75.0,
                    late_bounces_sent=5, late_bounces_acted=5, late_bounces_acted_pct=100.0)
    report.judge(load_settings())

    assert not report.all_targets_met
    assert [check.figure for check in report.checks if not check.met] == [
        "replies_threaded_pct"]
    markdown = report.as_markdown()
    assert "| `replies_threaded_pct` | 75.0 | ≥ 100.0 | **NO** |" in markdown
    assert "6. **Inbound mail.** 4 admins answered the first update" in markdown


def test_a_local_drill_whose_inbound_phase_measured_nothing_is_not_met():
    report = Report(admins_reached_pct=100.0, requests_matched_pct=100.0, verified_pct=100.0,
                    time_to_first_update_s=3.0, vault_restore_s=1.0, inbound_run=True)
    report.judge(load_settings())

    assert [check.figure for check in report.checks if not check.met] == [
        "replies_threaded_pct", "late_bounces_acted_pct"]
