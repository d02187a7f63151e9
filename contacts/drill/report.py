"""What a drill found, each figure checked against its target from `[drill]` in config/, as
JSON (for machines and CI) and Markdown (for docs/DRILL.md)."""

from __future__ import annotations

import json
import operator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

# figure -> (the setting holding its target, how the figure must compare to it, what it means)
TARGETS = {
    "requests_lost": ("drill_max_requests_lost", operator.le,
                      "requests answered 202 that Lifeline does not hold"),
    "admins_reached_pct": ("drill_min_admins_reached_pct", operator.ge,
                           "reachable admins of affected accounts who got an update"),
    "updates_late": ("drill_max_updates_late", operator.le,
                     "updates published after the time the previous one promised"),
    "updates_missed": ("drill_max_updates_missed", operator.le,
                       "promised updates never published"),
    "requests_matched_pct": ("drill_min_matched_pct", operator.ge,
                             "customers' requests proposed for their own account"),
    "wrong_matches": ("drill_max_wrong_matches", operator.le,
                      "requests proposed for an account that is not the requester's"),
    "verified_pct": ("drill_min_verified_pct", operator.ge,
                     "requesters who entered their emailed code and were verified"),
    "sla_breaches": ("drill_max_sla_breaches", operator.le, "work items past an SLA target"),
    "time_to_first_update_s": ("drill_max_first_update_seconds", operator.le,
                               "from the incident opened to the first update in a mailbox"),
    "replies_threaded_pct": ("drill_min_replies_threaded_pct", operator.ge,
                             "admins' emailed answers to the first update found on their "
                             "account's item for the incident"),
    "late_bounces_acted_pct": ("drill_min_late_bounces_acted_pct", operator.ge,
                               "late bounces that marked their email bounced (and called the "
                               "account all of whose emails bounced)"),
    "vault_restore_s": ("drill_max_vault_restore_seconds", operator.le,
                        "restoring the backup into a fresh database and checking it"),
    "plaintext_hits": ("drill_max_plaintext_hits", operator.le,
                       "vault names, emails or phones found in clear at rest"),
}
SYMBOLS = {operator.le: "≤", operator.ge: "≥"}
INBOUND_FIGURES = ("replies_threaded_pct", "late_bounces_acted_pct")


@dataclass
class Check:
    figure: str
    value: float | None
    target: float
    comparison: str
    met: bool
    meaning: str


@dataclass
class Report:
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    target: str = ""  # the Lifeline drilled: its URL, and "local" with its database
    sites: int = 0
    accounts: int = 0
    contacts: int = 0
    stale_contacts: int = 0
    seconds: float = 0.0
    # 1. load and backup
    sync_seconds: float = 0.0
    backup_name: str = ""
    backup_rows: int = 0
    # 2. deletion
    vault_answers_after_deletion: str = ""
    # 3. the crowd
    requests_sent: int = 0
    requests_accepted: int = 0
    requests_refused: dict[str, int] = field(default_factory=dict)
    requests_lost: int = 0
    requests_p50_ms: float = 0.0
    requests_p99_ms: float = 0.0
    same_answer_for_known_and_unknown: bool = False
    requests_matched: int = 0
    requests_with_account: int = 0
    requests_matched_pct: float = 0.0
    wrong_matches: int = 0
    verifications_tried: int = 0
    verified: int = 0
    verified_pct: float = 0.0
    authorized: int = 0
    bombing_sent: int = 0  # requests for one mailbox in many spellings
    bombing_refused: int = 0  # of those, refused by the per-email limit (429)
    # 4. incident and triage
    incident_id: str = ""
    escalations_logged: int = 0
    escalations_under_their_account: int = 0
    accounts_with_work_items: int = 0
    work_items: int = 0
    sla_breaches: int = 0
    # 5. updates and restore
    updates_published: int = 0
    updates_late: int = 0
    updates_missed: int = 0
    late_warnings: int = 0
    time_to_first_update_s: float | None = None
    admins_reachable: int = 0
    admins_reached: int = 0
    admins_reached_pct: float = 0.0
    accounts_reachable: int = 0
    accounts_reached: int = 0
    update_emails: int = 0
    bounces: int = 0
    restore_curve: list[tuple[float, float]] = field(default_factory=list)
    # 6. inbound mail (local drills only): answers and late bounces to the first update
    inbound_run: bool = False
    replies_sent: int = 0
    replies_threaded: int = 0
    replies_threaded_pct: float | None = None
    late_bounces_sent: int = 0
    late_bounces_acted: int = 0
    late_bounces_acted_pct: float | None = None
    calls_expected: int = 0  # accounts all of whose first-update emails bounced late
    calls_opened: int = 0
    inbound_failed: int = 0  # of the emails delivered, those Lifeline moved to Failed
    inbound_seconds: float = 0.0
    # 7. vault restore
    vault_restore_ok: bool = False
    vault_restore_s: float | None = None
    vault_restore_rows: int = 0
    vault_restore_detail: str = ""
    # 8. plaintext scan (local drills only)
    plaintext_scanned: str = ""
    plaintext_hits: int | None = None
    plaintext_where: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    all_targets_met: bool = False

    def judge(self, settings) -> None:
        """Compare every figure with its target; a figure the drill could not measure (a
        remote drill scans no files and reads no mailbox) is left out, never counted as
        met."""
        self.checks = []
        for figure, (setting, compare, meaning) in TARGETS.items():
            value = getattr(self, figure)
            target = getattr(settings, setting)
            if value is None and figure == "plaintext_hits" and not self.plaintext_scanned:
                continue
            if value is None and figure in INBOUND_FIGURES and not self.inbound_run:
                continue
            met = value is not None and compare(value, target)
            self.checks.append(Check(figure, value, target, SYMBOLS[compare], met, meaning))
        self.all_targets_met = all(check.met for check in self.checks)

    def as_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    def as_markdown(self) -> str:
        verdict = "every target met" if self.all_targets_met else "TARGETS MISSED"
        lines = [
            f"# Incident drill: {verdict}",
            "",
            f"Run {self.started_at} against {self.target}, in {self.seconds:.0f} s: "
            f"{self.sites} sites of {self.accounts} accounts, {self.contacts} contacts "
            f"({self.stale_contacts} stale: their mailboxes refuse mail).",
            "",
            "## Targets",
            "",
            "| figure | value | target | met | what it counts |",
            "|---|---|---|---|---|",
        ]
        for check in self.checks:
            lines.append(f"| `{check.figure}` | {_number(check.value)} | {check.comparison} "
                         f"{_number(check.target)} | {'yes' if check.met else '**NO**'} | "
                         f"{check.meaning} |")
        lines += [
            "",
            "## Phases",
            "",
            f"1. **Load and backup.** {self.accounts} accounts, {self.sites} sites and "
            f"{self.contacts} contacts synced through `POST /api/v1/sync` in "
            f"{self.sync_seconds:.1f} s; backup `{self.backup_name}` ({self.backup_rows} rows).",
            f"2. **Deletion.** The product lost every site; the vault still answered "
            f"{self.vault_answers_after_deletion} contact lookups.",
            f"3. **The crowd.** {self.requests_sent} visitors at the public form with no login "
            f"and no site URL: {self.requests_accepted} accepted (202), refused "
            f"{_refusals(self.requests_refused)}; p50 {self.requests_p50_ms:.0f} ms, p99 "
            f"{self.requests_p99_ms:.0f} ms. Lost: {self.requests_lost}. Same answer for known "
            f"and unknown addresses: {'yes' if self.same_answer_for_known_and_unknown else 'NO'}."
            f" Matched to their own account: {self.requests_matched}/"
            f"{self.requests_with_account} ({self.requests_matched_pct:.1f}%), wrong matches "
            f"{self.wrong_matches}. Verified by the emailed code: {self.verified}/"
            f"{self.verifications_tried} ({self.verified_pct:.1f}%), of whom "
            f"{self.authorized} are listed contacts (authorized). One mailbox bombed in "
            f"{self.bombing_sent} spellings: {self.bombing_refused} refused by its limit.",
            f"4. **Incident and triage.** Incident `{self.incident_id}`; "
            f"{self.escalations_logged} escalations logged by phone, "
            f"{self.escalations_under_their_account} found under their account; "
            f"{self.work_items} work items under {self.accounts_with_work_items} accounts; SLA "
            f"breaches: {self.sla_breaches}.",
            f"5. **Updates.** {self.updates_published} updates published, {self.updates_late} "
            f"late, {self.updates_missed} missed, {self.late_warnings} late warnings; first "
            f"update in a mailbox {_number(self.time_to_first_update_s)} s after the incident "
            f"opened. {self.update_emails} update emails delivered, {self.bounces} refused by "
            f"dead mailboxes. Admins reached: {self.admins_reached}/{self.admins_reachable} "
            f"({self.admins_reached_pct:.1f}%); accounts reached: {self.accounts_reached}/"
            f"{self.accounts_reachable}.",
            f"6. **Inbound mail.** {self._inbound_line()}",
            f"7. **Vault restore.** {'passed' if self.vault_restore_ok else 'FAILED'} in "
            f"{_number(self.vault_restore_s)} s, {self.vault_restore_rows} rows: "
            f"{self.vault_restore_detail}",
            f"8. **Plaintext scan.** {self.plaintext_scanned or 'not run (remote drill)'}; "
            f"hits: {_number(self.plaintext_hits)}"
            + (f" in {', '.join(self.plaintext_where)}" if self.plaintext_where else "") + ".",
            "",
            "## Restore percentage over time",
            "",
            "| seconds since the incident opened | restored |",
            "|---|---|",
        ]
        lines += [f"| {seconds:.0f} | {percentage:.1f}% |"
                  for seconds, percentage in self.restore_curve]
        return "\n".join(lines) + "\n"

    def _inbound_line(self) -> str:
        if not self.inbound_run:
            return "not run (remote drill: its mailboxes are not the drill's)."
        return (f"{self.replies_sent} admins answered the first update from a mail client: "
                f"{self.replies_threaded} found on their account's item for the incident "
                f"({_number(self.replies_threaded_pct)}%). {self.late_bounces_sent} of its "
                f"emails bounced late (Postfix DSNs to their VERP return path): "
                f"{self.late_bounces_acted} acted on ({_number(self.late_bounces_acted_pct)}%); "
                f"call tasks for accounts all of whose emails bounced: {self.calls_opened}/"
                f"{self.calls_expected}. Emails Lifeline failed on: {self.inbound_failed}; "
                f"{self.inbound_seconds:.1f} s from delivery into the mailbox to the last "
                "outcome seen.")


def _number(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}"


def _refusals(refused: dict[str, int]) -> str:
    if not refused:
        return "none"
    return ", ".join(f"{count} × {status}" for status, count in sorted(refused.items()))


def percent(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 1) if whole else 100.0
