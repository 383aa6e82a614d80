"""`python -m connector` is the same as the `billing-connector` command."""

from connector.cli import main

if __name__ == "__main__":
    main()
