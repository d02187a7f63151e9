"""The incident drill: the 2022 deletion replayed end to end against a running Lifeline."""
