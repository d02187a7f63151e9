"""Inbound email: what customers send to Lifeline's addresses, read from IMAP mailboxes.

Layers, from the mailbox inwards:
- `mailbox.py`: the IMAP reader (imap-tools): fetch, hand each message's bytes to the
  router, then move it to `Lifeline/Done` or `Lifeline/Failed`; idempotent on the
  mailbox's UID and the Message-ID, so a crash between the read and the commit processes
  nothing twice. `imap.py` is its IMAP session; `watch.py` the workers' IDLE watch over a
  mailbox; `cli.py` is `flask inbound read`.
- `parsing.py` (with `reports.py`, `authentication.py`, `autoreplies.py`, `quoting.py`):
  pure functions from RFC 5322 bytes to `message.Inbound`; no database.
- `tokens.py`: the signed tokens of reply addresses (`support+<token>@`) and of the VERP
  return path (`bounces+<token>@`).
- `routing.py` / `service.py`: what a parsed message does: a reply joins its thread, a new
  message becomes a request, a report marks its outbox message, an auto-reply is recorded
  and never answered.
"""
