"""Shared pytest set-up: tests import their fixtures modules (train_fixtures, ...) from this folder,
and property tests draw the same examples on every run (a CI result does not depend on luck;
`HYPOTHESIS_PROFILE=explore` draws fresh ones locally)."""
import os
import sys
from pathlib import Path

from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))

settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
