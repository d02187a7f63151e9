"""Out-of-band intake: support requests from people with no login and no working site."""
