"""One module per command, named as the command: `COMMAND = Command(...)` (sitestack/options.py)
declares its options once; `run(args) -> int` does the work, importing lazily."""
