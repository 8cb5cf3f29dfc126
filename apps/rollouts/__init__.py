"""Releases and their revisions, segments, stages, rollback, and the config / OFREP API."""
