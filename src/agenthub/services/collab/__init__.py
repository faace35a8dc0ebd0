"""The Collab domain: sessions, messages and collaborations between AI identities."""
