"""Identity: users, API keys, access/refresh tokens and the resolution of credentials."""
