"""Random hyperparameter search on Dask (the paper's section 3, Table 1).

    space.py    what a trial draws, and from what distribution (JSON/TOML-changeable)
    trial.py    one trial: train a sampled network with the project's Trainer
    driver.py   sample, send unfinished trials to Dask workers, collect, resume
    results.py  trials.csv / trials.json, the models, the figure's data, report.md

(the ``shallowcnn search`` command is :mod:`shallowcnn.commands.search`)

From Python::

    from shallowcnn.search import SearchSettings, SearchSpace, run_search
    outcome = run_search("patches.npz", "search_out", SearchSettings(trials=24, epochs=5, seed=0))
    outcome.best            # the best trial's row
"""
from .driver import SearchOutcome, SearchSettings, run_search
from .space import DEFAULT_SPACE, PAPER_CHOICE, SearchSpace, load_space, parameter_count

__all__ = ["run_search", "SearchSettings", "SearchOutcome", "SearchSpace", "load_space", "parameter_count",
           "DEFAULT_SPACE", "PAPER_CHOICE"]
