"""A faithful local Kombo (`python -m sandbox`) and a stand-in for the provider's platform
(`python -m sandbox.platform`); see sandbox/README.md. Stand-ins for external systems: no `kombo_sync` imports."""
