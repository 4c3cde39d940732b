"""The package installs as built: the C++ extension compiles and imports; megatron stays in megatron_ext."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_cpp_extension_imports():
    import cpt._C as C

    assert isinstance(C.KERNEL_VERSION, int) and C.KERNEL_VERSION >= 1
    assert Path(C.__file__).suffix == ".so"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_only_megatron_ext_imports_megatron():
    offenders = []
    for path in sorted((REPO / "cpt").rglob("*.py")):
        for name in _imports(path):
            if name.startswith("megatron.") or name == "megatron":
                offenders.append(f"{path.relative_to(REPO)} imports {name}")
    assert offenders == []


def test_cpt_reaches_megatron_ext_only_through_the_wiring_modules():
    allowed = {"cpt/cli.py", "cpt/train/run.py"}
    offenders = []
    for path in sorted((REPO / "cpt").rglob("*.py")):
        rel = str(path.relative_to(REPO))
        if rel in allowed or rel.startswith("cpt/commands/"):
            continue
        if any(n.startswith("megatron_ext") for n in _imports(path)):
            offenders.append(rel)
    assert offenders == []


def test_features_detect_missing_gpu_extras_without_failing():
    from megatron_ext import features

    found = features.summary()
    assert set(found) == {"transformer_engine", "apex", "flash_attn"}
    assert all(isinstance(v, bool) for v in found.values())


def test_pyproject_uses_no_form_setuptools_has_deprecated():
    # setuptools warns for a while, then stops building (the license table: "By 2027-Feb-18").
    import warnings

    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply_configuration(Distribution(), REPO / "pyproject.toml")
    assert [str(w.message) for w in caught if "Deprecat" in w.category.__name__] == []
