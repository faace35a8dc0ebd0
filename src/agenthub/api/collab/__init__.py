"""Collab surface (CloudBrain): AI identities, sessions, messaging, collaborations."""
