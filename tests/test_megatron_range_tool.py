"""tools/megatron_range.py: which megatron-core releases it tests, how it reads pytest's outcome, and
when it says the declared bound can rise."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from megatron_ext import compat

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import megatron_range  # noqa: E402

REGISTRY = ["0.20.1", "0.20.0", "0.20.1rc1", "0.19.2", "0.19.0", "0.18.2", "0.18.0", "0.17.1", "0.17.0",
            "0.16.1", "0.16.0", "0.15.3"]


def test_releases_are_the_newest_patch_of_each_series_in_range_then_above_it():
    assert megatron_range.releases_to_test(REGISTRY, ">=0.16.1,<0.20") == [
        "0.16.1", "0.17.1", "0.18.2", "0.19.2", "0.20.1"]
    assert megatron_range.releases_to_test(REGISTRY, ">=0.16.1,<0.17") == [
        "0.16.1", "0.17.1", "0.18.2", "0.19.2", "0.20.1"]
    # nothing above the bound: the range's own series only, pre-releases never
    assert megatron_range.releases_to_test(["0.16.1", "0.17.0rc2"], ">=0.16.1,<0.20") == ["0.16.1"]
    with pytest.raises(ValueError, match="inside the declared range"):
        megatron_range.releases_to_test(["0.15.3"], ">=0.16.1,<0.20")


@pytest.mark.parametrize("line, expected", [
    ("81 passed, 728 warnings in 202.52s (0:03:22)", {"passed": 81, "failed": 0, "errors": 0, "skipped": 0}),
    ("1 failed, 789 passed, 2 skipped, 9 warnings in 747.30s", {"passed": 789, "failed": 1, "errors": 0, "skipped": 2}),
    ("3 errors in 1.20s", {"passed": 0, "failed": 0, "errors": 3, "skipped": 0}),
    ("1 error, 5 passed in 2.00s", {"passed": 5, "failed": 0, "errors": 1, "skipped": 0}),
])
def test_the_summary_line_is_read(line, expected):
    text = f"....F..\nFAILED tests/x.py::test_y - 2 passed in 0.1s inside a message\n{line}\n"
    assert megatron_range.parse_summary(text) == expected


def test_a_run_that_printed_no_summary_has_nothing_passed():
    outcome = megatron_range.Outcome("0.19.2", True, **megatron_range.parse_summary("Segmentation fault\n"),
                                     seconds=1.0, returncode=-11)
    assert not outcome.ok


def _outcome(release: str, ok: bool, declared: str = ">=0.16.1,<0.20") -> megatron_range.Outcome:
    from packaging.specifiers import SpecifierSet

    return megatron_range.Outcome(release, release in SpecifierSet(declared), passed=10, failed=0 if ok else 1,
                                  errors=0, skipped=0, seconds=1.0, returncode=0 if ok else 1)


def test_the_bound_rises_only_to_a_passing_release_above_it_with_every_one_below_passing():
    hint = megatron_range.raise_hint([_outcome("0.19.2", True), _outcome("0.20.1", True)], ">=0.16.1,<0.20", "3.12")
    assert hint is not None and "'>=0.16.1,<0.21'" in hint and "Python 3.12" in hint
    # a failure above the bound stops the climb there
    hint = megatron_range.raise_hint([_outcome("0.19.2", True), _outcome("0.20.1", True), _outcome("0.21.0", False),
                                      _outcome("0.22.0", True)], ">=0.16.1,<0.20", "3.12")
    assert "'>=0.16.1,<0.21'" in hint
    assert megatron_range.raise_hint([_outcome("0.19.2", True), _outcome("0.20.1", False)], ">=0.16.1,<0.20",
                                     "3.12") is None
    # a release inside the range that fails: nothing rises
    assert megatron_range.raise_hint([_outcome("0.19.2", False), _outcome("0.20.1", True)], ">=0.16.1,<0.20",
                                     "3.12") is None


def test_the_declared_range_is_asked_for_the_tested_python():
    assert compat.tested_range("3.12") == ">=0.16.1,<0.20"
    assert compat.tested_range("3.11") == ">=0.16.1,<0.17"
    assert compat.tested_range() == compat.tested_range("%d.%d" % sys.version_info[:2])
