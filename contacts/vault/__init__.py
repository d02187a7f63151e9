"""The contact vault: accounts, their sites and apps, and their authorized contacts, kept
encrypted outside the product, versioned, soft-deleted, backed up and restorable."""
