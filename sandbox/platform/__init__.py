"""`python -m sandbox.platform` runs the assessment platform stand-in (the app is in `sandbox.platform_app`)."""
