"""The shared core: settings, database, typed IDs, encryption, errors, audit, access
rules, API plumbing, inputs, logs, rate limits, schema, keys, scheduler, mail, clock.

Nothing here imports a domain (an import-linter contract in pyproject.toml says so).
"""
