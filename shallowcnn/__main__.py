"""``python -m shallowcnn`` is the same as the ``shallowcnn`` command."""
import sys

from .cli import main

sys.exit(main())
