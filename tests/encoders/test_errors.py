"""One error family: every exception class Ember defines derives from EmberError (and keeps the
builtin base it always had, so existing ``except ValueError`` code still catches it)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from encoders.errors import EmberError

PACKAGES = ["encoders", "indexer", "workers", "search_api", "ember"]
# ApiError is the API's own edge type (an HTTP answer, not a domain error); UserError is the
# CLI's (click's ClickException, printed by click)
EDGE_TYPES = {"search_api.errors.ApiError", "ember.errors.UserError"}


def own_exception_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in PACKAGES:
        package = importlib.import_module(name)
        modules = [package]
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            if info.name.endswith("__main__"):  # runs the CLI
                continue
            try:
                modules.append(importlib.import_module(info.name))
            except ImportError:  # an optional extra that is not installed
                continue
        for module in modules:
            for obj in vars(module).values():
                if (
                    inspect.isclass(obj)
                    and issubclass(obj, BaseException)
                    and obj.__module__ == module.__name__
                ):
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [cls for key, cls in sorted(found.items()) if key not in EDGE_TYPES]


def test_every_exception_class_is_an_ember_error() -> None:
    classes = own_exception_classes()
    assert len(classes) >= 20  # the walk found the packages' errors
    strays = [f"{c.__module__}.{c.__qualname__}" for c in classes if not issubclass(c, EmberError)]
    assert strays == []


@pytest.mark.parametrize(
    ("path", "builtin", "status"),
    [
        ("indexer.store.CollectionNotFoundError", KeyError, 404),
        ("indexer.store.CollectionExistsError", ValueError, 409),
        ("indexer.search.EncoderMismatchError", ValueError, 409),
        ("indexer.sparse.SparseUnavailableError", LookupError, 409),
        ("encoders.instructions.UnknownTaskError", ValueError, 422),
        ("workers.jobs.JobNotFoundError", KeyError, 404),
        ("encoders.loading.ModelNotFoundError", RuntimeError, None),
    ],
)
def test_errors_keep_their_builtin_base_and_carry_a_status(
    path: str, builtin: type[Exception], status: int | None
) -> None:
    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, builtin) and issubclass(cls, EmberError)
    assert cls.status == status


def test_key_errors_print_their_message_unquoted() -> None:
    from indexer.store import CollectionNotFoundError

    assert str(CollectionNotFoundError("docs")) == "collection or alias 'docs' not found"
