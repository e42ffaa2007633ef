"""Fault injection against a running platform: `tagwatch chaos` (tagwatch/cli/chaos.py)."""
