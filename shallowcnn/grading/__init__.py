"""Grading of the tutorial exercises: the checks (``checks``), the capstone's (``capstone``), the list
of exercises (``exercises``) and the grading of whole notebooks (``notebook``, ``shallowcnn grade``).

``from shallowcnn import grading`` gives every ``check_*`` function, as the notebooks' check cells
call them.
"""
from .checks import *  # noqa: F401,F403  (the check functions, the oracles, ExerciseFailed)
from .checks import ExerciseFailed, compare  # noqa: F401
from .capstone import (ACCURACY_TARGET, check_network_gradients, check_network_overfits,  # noqa: F401
                       check_phantom_accuracy, phantom_patches)
