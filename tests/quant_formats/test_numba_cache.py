"""quant_formats/numba_cache.py: cached kernels are invalidated by a change to any
source file of the project, not only their own."""
import shutil

from quant_formats import numba_cache


def test_project_kernels_use_the_tree_stamp():
    from quant_formats import q5_0
    locator = q5_0._quantize_rows._cache._impl._locator
    assert type(locator).__name__.startswith("TreeStamped")
    assert locator.get_source_stamp() == numba_cache.tree_digest()


def test_other_code_keeps_numbas_locators(tmp_path):
    from numba import njit
    other = njit(cache=True)(lambda x: x + 1)  # defined in this test file: not ours
    assert not type(other._cache._impl._locator).__name__.startswith("TreeStamped")


def test_editing_any_project_file_changes_the_stamp(tmp_path, monkeypatch):
    copies = []
    for package in numba_cache.PACKAGES:
        copies.append(tmp_path / package.name)
        shutil.copytree(package, copies[-1], ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(numba_cache, "PACKAGES", copies)
    before = numba_cache.tree_digest.__wrapped__()
    helper = copies[0] / "quantize_common.py"  # a callee, not the caller's own file
    helper.write_text(helper.read_text() + "\n# edited\n")
    assert numba_cache.tree_digest.__wrapped__() != before
