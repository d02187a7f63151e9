"""gunicorn's settings for Lifeline, read from the directory gunicorn starts in: its access
log (off unless --access-logfile is given) hides the tokens of links and drops query strings
(contacts/core/accesslog.py)."""

logger_class = "contacts.core.accesslog.GunicornAccessLog"
