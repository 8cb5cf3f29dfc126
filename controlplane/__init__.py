"""Shipway's project package: settings, URL wiring, the Celery app, WSGI/ASGI entry points."""
from controlplane.celery import app as celery_app

__all__ = ["celery_app"]
