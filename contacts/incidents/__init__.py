"""Incidents, restore progress per site, and the structured updates sent about them."""
