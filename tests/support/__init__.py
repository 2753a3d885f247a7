"""Test and benchmark tooling (not shipped in the product)."""
