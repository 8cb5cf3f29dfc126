"""Environments, SDK keys, personal API tokens, roles and audit events."""
