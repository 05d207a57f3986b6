"""An autograder for PyTorch coursework: untrusted notebooks in, scored reports out.

`from grader import check, check_all` gives students a self-check on the public cases
(grader/selfcheck.py); it is imported on first use, so `import grader` stays cheap.
"""

__version__ = "0.1.0"
__all__ = ["check", "check_all", "__version__"]

_LAZY = {"check": "selfcheck", "check_all": "selfcheck"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
