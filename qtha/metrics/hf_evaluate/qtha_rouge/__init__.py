"""An `evaluate` module folder (a package only so that setuptools ships the script)."""
