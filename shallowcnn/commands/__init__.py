"""The sub-commands of `shallowcnn`, one module each: ``add_command(subparsers)`` and ``run_command(args)``."""
