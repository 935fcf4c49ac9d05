import inspect
import types

import chute
import chute.exceptions


def test_all_is_sorted_and_unique() -> None:
    assert chute.__all__ == sorted(set(chute.__all__))


def test_every_name_in_all_exists() -> None:
    missing = [name for name in chute.__all__ if not hasattr(chute, name)]
    assert missing == []


def test_every_public_name_is_exported() -> None:
    public = {
        name
        for name, value in vars(chute).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public - set(chute.__all__) == set()


def test_every_chute_error_is_exported() -> None:
    errors = {
        name
        for name, value in vars(chute.exceptions).items()
        if inspect.isclass(value) and issubclass(value, chute.ChuteError)
    }
    assert errors <= set(chute.__all__)


def test_version_is_a_string() -> None:
    assert isinstance(chute.__version__, str)
    assert chute.__version__
