"""Staff users, their sign-in, and the API tokens machine clients act with."""
