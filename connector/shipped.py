"""Where the files the connector ships are found at run time: the default mappings and the
commented example config.

In the repository they live at the top (`mappings/`, `config.example.yaml`), where admins see
them; the wheel carries copies in `connector/_shipped/` (package_build.py puts them there). So an
installed command finds them inside the package, and a checkout (editable install, PYTHONPATH)
finds the top-level originals. Never the current directory: every command works from anywhere.
"""

from __future__ import annotations

from pathlib import Path

from connector.errors import ConfigError

_PACKAGE = Path(__file__).resolve().parent
_INSTALLED = _PACKAGE / "_shipped"
_CHECKOUT = _PACKAGE.parent


def shipped_root() -> Path:
    """The folder holding `mappings/` and `config.example.yaml` for this installation."""
    for root in (_INSTALLED, _CHECKOUT):
        if (root / "mappings" / "customer.yaml").is_file() and (
            root / "config.example.yaml"
        ).is_file():
            return root
    raise ConfigError(
        f"the default mappings and config.example.yaml are missing from this installation "
        f"(looked in {_INSTALLED} and {_CHECKOUT}); reinstall billing-connector from a wheel "
        "or run it from a checkout"
    )


def default_mappings_dir() -> Path:
    return shipped_root() / "mappings"


def example_config() -> Path:
    return shipped_root() / "config.example.yaml"
