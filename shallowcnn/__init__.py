"""shallowcnn: the shallow CNN of Luna-Lozoya et al., written by hand in NumPy and Numba."""
__version__ = "0.1.0"
