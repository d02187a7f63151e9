"""Accounts and escalations: work items under one account, their SLAs and hand-offs."""
