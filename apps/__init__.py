"""Shipway's Django apps. Imports point one way: core <- prompts <- metrics, reviews <- rollouts."""
