"""An autograder for the Conv2d assignment: untrusted notebooks in, scored reports out."""

__version__ = "0.1.0"
