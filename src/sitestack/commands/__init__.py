"""One module per command; each has register(subparsers) and a lazy run(args)."""
