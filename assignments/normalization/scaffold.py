"""The course scaffold for the normalization lesson: the imports its code boxes start with.

The grader runs this module's source first in every submission's namespace, so a step that
relies on the course's `import torch` (and does not repeat it) still loads.
"""
import torch
