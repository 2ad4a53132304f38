"""The search space: which hyperparameters a trial draws, and from what.

Random search (Bergstra and Bengio, 2012; the paper's section 3, "Hyperparameter
Tuning") draws every hyperparameter of a trial independently from its own
distribution. Our default space surrounds the paper's choice (Table 1: 6 and 16
filters of 9x9, learning rate 0.001, batch 64, dropout probability 0.2):

==============  ===================  ==========================================
name            default              drawn as
==============  ===================  ==========================================
conv1_filters   {"int": [2, 32]}     integer, every value equally likely
conv2_filters   {"int": [2, 32]}     integer
kernel_size     {"odd": [3, 13]}     odd integer (3, 5, ..., 13), both convs
lr              {"log_uniform":      log10(lr) uniform: each decade as likely
                [1e-4, 1e-2]}        as the next (Adam's learning rate)
batch_size      {"choice":           one of the listed values
                [16, 32, 64, 128]}
p_drop          {"uniform":          dropout probability, as everywhere in the
                [0.0, 0.5]}          package (0: no dropout)
==============  ===================  ==========================================

A JSON or TOML file changes any of them; the others keep their defaults. A
plain number fixes a parameter::

    {"conv1_filters": {"int": [2, 8]}, "kernel_size": 9, "lr": {"log_uniform": [1e-3, 1e-2]}}

    # the same in TOML
    conv1_filters = { int = [2, 8] }
    kernel_size = 9
    lr = { log_uniform = [1e-3, 1e-2] }

Older space files named the dropout parameter ``keep`` (the probability of keeping a
unit, 1 - p_drop); such a rule is still read, converted once by :func:`keep_to_p_drop`.

Reproducible by construction: trial ``i`` of seed ``s`` draws from its own
generator ``default_rng([s, i])``, so it is the same trial however many trials
the search has and whichever worker runs it.
"""
from __future__ import annotations

import json
import math
import reprlib
from pathlib import Path

import numpy as np

from ..model import MAX_CHANNELS, MAX_KERNEL_SIZE     # what ShallowCNN accepts
from ..recipe import PAPER

DEFAULT_SPACE = {
    "conv1_filters": {"int": [2, 32]},
    "conv2_filters": {"int": [2, 32]},
    "kernel_size": {"odd": [3, 13]},
    "lr": {"log_uniform": [1e-4, 1e-2]},
    "batch_size": {"choice": [16, 32, 64, 128]},
    "p_drop": {"uniform": [0.0, 0.5]},
}
PARAMETERS = tuple(DEFAULT_SPACE)            # the order in which a trial draws them (never change it)
KINDS = ("int", "odd", "uniform", "log_uniform", "choice")
INTEGER_PARAMETERS = ("conv1_filters", "conv2_filters", "kernel_size", "batch_size")

# The paper's choice (Table 1), shown beside the search's best trial.
PAPER_CHOICE = {"conv1_filters": PAPER.channels[0], "conv2_filters": PAPER.channels[1],
                "kernel_size": PAPER.kernel_size, "lr": PAPER.lr, "batch_size": PAPER.batch_size,
                "p_drop": PAPER.p_drop}


class SpaceError(ValueError):
    """A search space that cannot be sampled (names the file and the parameter)."""


def draw(rule, rng: np.random.Generator):
    """One value of one parameter. ``rule`` is a number (fixed) or {kind: arguments}."""
    if not isinstance(rule, dict):
        return rule
    (kind, args), = rule.items()
    if kind == "int":
        return int(rng.integers(args[0], args[1] + 1))
    if kind == "odd":                     # the odd numbers lo, lo + 2, ..., hi
        return int(args[0] + 2 * rng.integers(0, (args[1] - args[0]) // 2 + 1))
    if kind == "uniform":
        return float(rng.uniform(args[0], args[1]))
    if kind == "log_uniform":
        return float(math.exp(rng.uniform(math.log(args[0]), math.log(args[1]))))
    return args[int(rng.integers(0, len(args)))]       # choice


# The least and largest value each parameter may take (None: no limit). A learning rate
# below 1e-8 cannot move float32 weights (and broke the figure's log colour scale); a huge
# one is allowed (its trial is recorded as diverged). A batch larger than 65,536 patches
# is more than a store holds and than memory allows.
LIMITS = {"conv1_filters": (1, MAX_CHANNELS), "conv2_filters": (1, MAX_CHANNELS), "batch_size": (1, 65_536),
          "kernel_size": (1, MAX_KERNEL_SIZE), "p_drop": (0.0, None), "lr": (1e-8, None)}
_REPR = reprlib.Repr()       # a rule as shown in a message: short, however deep or long
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 6, 4, 40, 40
_short = _REPR.repr


def _is_number(value) -> bool:
    """A JSON/TOML number that is finite (NaN, Infinity and 1e400 are refused)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_rule(name, rule, where):
    """Refuse a malformed rule, or one that could give an impossible value."""
    def bad(problem):
        raise SpaceError(f"{where}: {name}: {problem}")

    if isinstance(rule, dict):
        if len(rule) != 1 or next(iter(rule)) not in KINDS:
            bad(f"expected a number or one of {{{', '.join(k + ': ...' for k in KINDS)}}}, got {_short(rule)}")
        (kind, args), = rule.items()
        if not isinstance(args, list) or not args or not all(_is_number(a) for a in args):
            bad(f"{kind} needs a list of finite numbers, got {_short(args)}")
    elif _is_number(rule):
        kind, args = "fixed", [rule]
    elif isinstance(rule, float):
        bad(f"must be a finite number, got {rule}")
    else:
        bad(f"expected a number or a rule like {{\"int\": [2, 32]}}, got {_short(rule)}")
    if kind not in ("fixed", "choice") and (len(args) != 2 or args[0] > args[1]):
        bad(f"{kind} needs [low, high] with low <= high, got {args}")
    whole = name in INTEGER_PARAMETERS
    if whole and kind in ("uniform", "log_uniform"):
        bad(f"takes whole numbers: use int, odd, choice or a number, not {kind}")
    if (whole or kind in ("int", "odd")) and not all(float(a).is_integer() for a in args):
        bad(f"must be an integer, got {_short(rule)}")
    if kind == "odd" and any(int(a) % 2 == 0 for a in args):
        bad(f"odd needs odd bounds, got {args}")
    low, high = min(args), max(args)
    if (name == "lr" or kind == "log_uniform") and low <= 0:
        bad(f"must be positive, got {_short(rule)}")
    lo_limit, hi_limit = LIMITS.get(name, (None, None))
    if (lo_limit is not None and low < lo_limit) or (hi_limit is not None and high > hi_limit):
        bad(f"values must lie in [{lo_limit}, {hi_limit if hi_limit is not None else 'any'}], got {_short(rule)}")
    if name == "p_drop" and high >= 1:
        bad(f"a dropout probability must lie in [0, 1), got {_short(rule)}")
    if name == "kernel_size":        # the kernels are centred on a pixel: odd sizes only
        sizes = range(int(low), int(high) + 1) if kind == "int" else args if kind in ("fixed", "choice") else []
        if any(int(v) % 2 == 0 for v in sizes):
            bad(f"may only give odd sizes: use {{\"odd\": [3, 13]}} or odd numbers, got {_short(rule)}")


def keep_to_p_drop(rule, where: str = "search space"):
    """An older file's ``keep`` rule (probability of keeping a unit) as a ``p_drop`` rule."""
    def flip(value):
        return round(1.0 - value, 12) if _is_number(value) else value

    if _is_number(rule):
        return flip(rule)
    if isinstance(rule, dict) and len(rule) == 1 and isinstance(next(iter(rule.values())), list):
        (kind, args), = rule.items()
        if kind == "uniform" and len(args) == 2:
            return {"uniform": [flip(args[1]), flip(args[0])]}
        if kind == "choice":
            return {"choice": [flip(a) for a in args]}
    raise SpaceError(f"{where}: keep: only a number, uniform or choice can be converted to p_drop "
                     f"(the dropout probability, 1 - keep); write p_drop instead, got {rule!r}")


class SearchSpace:
    """The rules of every parameter (defaults changed by ``overrides``).

    ``overrides``: {name: rule}; ``where`` names their source in error messages.
    """

    def __init__(self, overrides: dict | None = None, where: str = "search space"):
        overrides = dict(overrides or {})
        if "keep" in overrides and "p_drop" not in overrides:      # an older file
            overrides["p_drop"] = keep_to_p_drop(overrides.pop("keep"), where)
        unknown = sorted(set(overrides) - set(PARAMETERS))
        if unknown:
            raise SpaceError(f"{where}: unknown parameter(s) {', '.join(unknown)}; "
                             f"known: {', '.join(PARAMETERS)}")
        self.rules = {name: overrides.get(name, DEFAULT_SPACE[name]) for name in PARAMETERS}
        for name, rule in self.rules.items():
            _check_rule(name, rule, where)

    def sample(self, seed: int, trial_id: int) -> dict:
        """Trial ``trial_id``'s hyperparameters, plus ``seed`` for its weights and shuffling."""
        rng = np.random.default_rng([seed, trial_id])
        trial = {"trial": trial_id}
        for name in PARAMETERS:
            value = draw(self.rules[name], rng)
            trial[name] = int(value) if name in INTEGER_PARAMETERS else float(value)
        trial["seed"] = int(rng.integers(0, 2**31 - 1))
        return trial

    def to_dict(self) -> dict:
        return {name: self.rules[name] for name in PARAMETERS}

    def describe(self) -> str:
        """One line per parameter, for --help and the report."""
        return "\n".join(f"  {name:<14} {json.dumps(rule)}" for name, rule in self.rules.items())


def load_space(path) -> SearchSpace:
    """A :class:`SearchSpace` from a .json or .toml file (errors name the file)."""
    path = Path(path)
    if not path.is_file():
        raise SpaceError(f"{path}: no such file (the search space, .json or .toml)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SpaceError(f"{path}: not UTF-8 text ({e}); save the search space as UTF-8") from None
    except OSError as e:
        raise SpaceError(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        if path.suffix.lower() == ".toml":
            try:
                import tomllib
            except ImportError:          # Python 3.10
                import tomli as tomllib
            overrides = tomllib.loads(text)
        elif path.suffix.lower() == ".json":
            overrides = json.loads(text)
        else:
            raise SpaceError(f"{path}: a search space must be a .json or .toml file")
    except ImportError:
        raise SpaceError(f"{path}: reading TOML on Python 3.10 needs 'pip install tomli'") from None
    except RecursionError:
        raise SpaceError(f"{path}: nests too deeply to be a search space") from None
    except ValueError as e:
        if isinstance(e, SpaceError):
            raise
        raise SpaceError(f"{path}: cannot be parsed: {e}") from None
    if not isinstance(overrides, dict):
        raise SpaceError(f"{path}: expected an object/table of parameters, got {type(overrides).__name__}")
    return SearchSpace(overrides, where=str(path))


def parameter_count(conv1_filters: int, conv2_filters: int, kernel_size: int) -> int:
    """Trainable parameters of ShallowCNN with these sizes (the paper's Table 2 sums).

    conv1: c1 (K K + 1); conv2: c2 (c1 K K + 1); dense: c2 + 1. (6, 16, 9) gives 8,301.
    """
    c1, c2, k2 = conv1_filters, conv2_filters, kernel_size * kernel_size
    return c1 * (k2 + 1) + c2 * (c1 * k2 + 1) + c2 + 1
