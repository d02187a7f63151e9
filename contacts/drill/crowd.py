"""Phase 3 of the drill: a crowd at the public form, with no login and no site URL. Each
visitor sends a request, those who can enter the code the SMTP sink received, every
accepted request is read back as Lifeline holds it, and one mailbox is bombed in many
spellings; the report gets the figures."""

from __future__ import annotations

import random
import re
import statistics
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from contacts.drill.client import Client
from contacts.drill.fleet import Fleet, Visitor, build_crowd
from contacts.drill.progress import Say
from contacts.drill.report import Report, percent
from contacts.drill.sink import Received, Sink

REQUEST_SUBJECT = re.compile(r"^\[(LL-[0-9A-Z]{4}-[0-9A-Z]{4})\]")
CODE_LINE = re.compile(r"^\s+(\d{6})\s*$", re.MULTILINE)  # the body's code; never the Subject
BOMBING = 10  # requests for one mailbox, above intake.rate_limit_per_email (6 an hour)
VERIFIED = ("email_verified", "authorized", "callback_confirmed")


@dataclass
class Answered:
    visitor: Visitor
    status: int
    milliseconds: float
    keys: tuple[str, ...] = ()
    reference: str | None = None
    verified: bool = False
    stored: dict | None = None


@dataclass
class Crowd:
    client: Client
    sink: Sink
    report: Report
    say: Say
    fleet: Fleet
    size: int
    threads: int
    answers: list[Answered] = field(default_factory=list)

    def gather(self, rng: random.Random) -> list[Answered]:
        crowd = build_crowd(self.fleet, size=self.size, rng=rng)
        self.say.phase(3, f"{len(crowd)} people at the public form, no login, no site URL")
        with ThreadPoolExecutor(self.threads) as pool:
            self.answers = list(pool.map(self._submit, crowd))
        accepted = [answer for answer in self.answers if answer.status == 202]
        self.say.step(f"{len(accepted)} accepted; verifying with the emailed codes")
        with ThreadPoolExecutor(self.threads) as pool:
            list(pool.map(self._verify, [answer for answer in accepted
                                         if answer.visitor.verifies]))
        self.say.step("waiting for every accepted request to be stored and matched")
        self._read_back(accepted)
        self._score_the_crowd(accepted)
        self._bomb_one_mailbox()
        r = self.report
        self.say.done(f"lost {r.requests_lost}, matched {r.requests_matched}/"
                      f"{r.requests_with_account}, verified {r.verified}/"
                      f"{r.verifications_tried}")
        return self.answers

    def _bomb_one_mailbox(self) -> None:
        """One listed admin's mailbox bombed from many addresses in many spellings (plus
        tags, case): the per-email limit must refuse it, and the limiter's keys and log
        lines, which the plaintext scan reads, must not name the address."""
        contact = next(c for c in self.fleet.contacts if not c.stale)
        local, _, domain = contact.email.partition("@")
        statuses = []
        for number in range(BOMBING):
            spelling = f"{local}+{number}@{domain}" if number % 2 else contact.email.upper()
            answer = self.client.call("POST", "/api/v1/requests", {
                "email": spelling, "message": "bombing"}, client_ip=f"10.250.0.{number + 1}",
                authenticated=False)
            statuses.append(answer.status)
        self.report.bombing_sent = len(statuses)
        self.report.bombing_refused = statuses.count(429)
        self.say.step(f"one mailbox bombed in {BOMBING} spellings: "
                      f"{self.report.bombing_refused} refused (429)")

    def _submit(self, visitor: Visitor) -> Answered:
        started = time.monotonic()
        answer = self.client.call("POST", "/api/v1/requests", visitor.body,
                                  client_ip=visitor.client_ip, authenticated=False)
        took = (time.monotonic() - started) * 1000
        if answer.status != 202:
            return Answered(visitor, answer.status, took)
        body = answer.json()
        return Answered(visitor, 202, took, keys=tuple(sorted(body)),
                        reference=body["reference"])

    def _verify(self, answered: Answered) -> None:
        address = answered.visitor.body["email"].lower()

        def code_arrived(messages: list[Received]) -> str | None:
            for message in messages:
                match = REQUEST_SUBJECT.search(message.subject)
                code = CODE_LINE.search(message.text)
                if (message.recipient == address and match and code
                        and match.group(1) == answered.reference):
                    return code.group(1)
            return None

        code = self.sink.wait_for(code_arrived, timeout=120)
        if code is None:
            return
        page = self.client.visitor(answered.visitor.client_ip)
        done = page.submit(f"/requests/{answered.reference}/verify", {"code": code})
        answered.verified = done.status == 303

    def _read_back(self, accepted: list[Answered]) -> None:
        """Each accepted request as Lifeline holds it, once its matching has run."""
        deadline = time.monotonic() + 120
        waiting = list(accepted)
        while waiting and time.monotonic() < deadline:
            still = []
            for answered in waiting:
                answer = self.client.call("GET", f"/api/v1/requests/{answered.reference}")
                if answer.status == 200 and answer.json().get("processed_at"):
                    answered.stored = answer.json()
                else:
                    still.append(answered)
            waiting = still
            if waiting:
                time.sleep(1)
        for answered in waiting:  # stored but never matched still counts as held
            answer = self.client.call("GET", f"/api/v1/requests/{answered.reference}")
            answered.stored = answer.json() if answer.status == 200 else None

    def _score_the_crowd(self, accepted: list[Answered]) -> None:
        r = self.report
        r.requests_sent = len(self.answers)
        r.requests_accepted = len(accepted)
        r.requests_refused = dict(Counter(str(a.status) for a in self.answers
                                          if a.status != 202))
        r.requests_lost = sum(1 for answered in accepted if answered.stored is None)
        times = sorted(answer.milliseconds for answer in self.answers)
        r.requests_p50_ms = round(statistics.median(times), 1)
        r.requests_p99_ms = round(times[min(len(times) - 1, int(len(times) * 0.99))], 1)
        shapes = {answered.keys for answered in accepted
                  if answered.visitor.kind in ("admin", "unknown")}
        r.same_answer_for_known_and_unknown = len(shapes) == 1
        customers = [a for a in accepted if a.visitor.expected_account is not None]
        r.requests_with_account = len(customers)
        r.requests_matched = sum(1 for a in customers if a.stored
                                 and _proposed(a.stored) == a.visitor.expected_account.id)
        r.requests_matched_pct = percent(r.requests_matched, len(customers))
        r.wrong_matches = sum(
            1 for a in accepted if a.stored and _proposed(a.stored) is not None
            and (a.visitor.expected_account is None
                 or _proposed(a.stored) != a.visitor.expected_account.id))
        tried = [a for a in accepted if a.visitor.verifies]
        r.verifications_tried = len(tried)
        # Read back after the codes were entered: `stored` holds the verification too.
        r.verified = sum(1 for a in tried if a.verified and a.stored
                         and a.stored["verification"] in VERIFIED)
        r.verified_pct = percent(r.verified, len(tried))
        r.authorized = sum(1 for a in tried
                           if a.stored and a.stored["verification"] == "authorized")


def _proposed(stored: dict) -> str | None:
    return stored.get("account_id")
