"""Shared pytest set-up: tests import their fixtures modules (train_fixtures, ...) from this folder."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
