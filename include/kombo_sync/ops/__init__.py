"""Operator commands run by hand (`python -m kombo_sync.ops --help`)."""
