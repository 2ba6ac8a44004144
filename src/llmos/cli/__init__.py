"""The `llmos` command line: `main.py` wires the app, one module per command group."""
