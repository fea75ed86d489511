from __future__ import annotations

import importlib.resources
import inspect

import aiguard
import aiguard.testing


def test_all_is_exactly_the_public_surface() -> None:
    """__all__ lists every public name of the package, sorted, and nothing else (names load
    when first used: ``dir`` lists them)."""
    public = {
        name
        for name in dir(aiguard)
        if not name.startswith("_") and not inspect.ismodule(getattr(aiguard, name))
    }
    assert set(aiguard.__all__) == public | {"__version__"}
    assert list(aiguard.__all__) == sorted(aiguard.__all__)


def test_every_public_name_has_a_docstring_with_an_example() -> None:
    """Each exported class and function documents itself with an example."""
    for name in aiguard.__all__ + [f"testing.{n}" for n in aiguard.testing.__all__]:
        obj = aiguard
        for part in name.split("."):
            obj = getattr(obj, part)
        if name == "__version__":
            continue
        doc = inspect.getdoc(obj) or ""
        assert "Example" in doc and ">>>" in doc, name


def test_package_ships_py_typed() -> None:
    """The py.typed marker is installed with the package."""
    assert importlib.resources.files("aiguard").joinpath("py.typed").is_file()
