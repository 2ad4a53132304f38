"""Grading of the tutorial exercises: the checks (``checks``), the capstone's (``capstone``), the list
of exercises (``exercises``) and the grading of whole notebooks (``notebook``, ``shallowcnn grade``).

``from shallowcnn import grading`` gives every ``check_*`` function, as the notebooks' check cells
call them.
"""
from .capstone import (  # noqa: F401
                       ACCURACY_TARGET,
                       check_network_gradients,
                       check_network_overfits,
                       check_phantom_accuracy,
                       phantom_patches,
)
from .checks import *  # noqa: F403 -- every check_* function, the names the check cells call
from .checks import ExerciseFailed, compare  # noqa: F401
