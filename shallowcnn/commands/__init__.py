"""The command line's one home: a module per ``shallowcnn`` command, and what they share.

Each module defines ``add_command(subparsers)`` (its options, checked as the line is
parsed) and ``run_command(args)`` (calls the library, turns its errors into
:class:`~shallowcnn.commands.common.CommandError`, returns the exit status).
:mod:`shallowcnn.cli` lists them with their one-line help (``COMMANDS``: `--help` imports
none of them; a test checks the two helps agree). The library below knows nothing of argparse or of
option names: ``commands/`` is the only layer that translates between them.

    common.py        checked option values, --backend, the Dask options, CommandError
    phantom.py  patches.py  train.py  evaluate.py  scan.py  demo.py  gradcheck.py
    export.py  import_keras.py  serve.py  tune.py  search.py  bundle.py  grade.py
"""
