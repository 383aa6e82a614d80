"""`python -m connector` and the `billing-connector` command.

The signal handlers go in before anything heavy is imported (typer, rich, SQLAlchemy, the
clients take most of a second): a SIGTERM during start-up then exits with the documented code
instead of -15. See connector/signals.py. glibc's malloc is tuned (connector/allocator.py)
before the first thread starts.
"""

from connector import allocator, signals


def main() -> None:
    signals.install()
    # Before any thread exists: the writers' arenas are created under these settings.
    allocator.tune()
    from connector.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
