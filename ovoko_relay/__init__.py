"""Relay Ovoko marketplace webhooks to the actions a car-parts seller needs."""

__version__ = "0.1.0"
