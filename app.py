"""`flask --app app` and `gunicorn app:app`: the app of `contacts/app.py`, built on first use."""
from contacts.app import __getattr__, create_app  # noqa: F401
