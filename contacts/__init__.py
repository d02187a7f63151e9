"""Lifeline: the out-of-band contact vault and incident communication service.

The package is named `contacts` because its first job, and the one everything else
rests on, is keeping customers' authorized admin contacts safe outside the product
that may have lost them. `core` holds what every area shares (settings, database,
IDs, encryption, errors, access rules); each other subpackage is one domain.
"""
