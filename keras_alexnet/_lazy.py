"""Names loaded on first use: "module:attribute" paths, and packages that export them lazily."""

import importlib
import sys


def resolve(path):
    """The object a "module:attribute" path names (importing the module)."""
    module, attribute = path.split(":")
    return getattr(importlib.import_module(module), attribute)


def lazy_exports(package, exports):
    """`package`'s `__getattr__` and `__dir__` for `exports` (name -> "module:attribute").

    A name is imported when first asked for, then kept in the package (PEP 562), so a
    package can offer its API without importing what the API needs.
    """

    def __getattr__(name):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = resolve(exports[name])
        setattr(sys.modules[package], name, value)
        return value

    def __dir__():
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
