"""Build steps that put the files admins see at the top of the repository inside the package.

`mappings/` (every file under it, at any depth) and `config.example.yaml` stay at the top of the
repository, where admins read and edit them. A wheel must carry them inside the `connector`
package, because an installed command has no checkout to look in: `build_py` copies them to
`connector/_shipped/`, and `connector.shipped` finds them there at run time (or, when run from a
checkout, at the top of the repository). `sdist` adds them to the source archive so that a wheel
built from it has them too.

setuptools loads this module from the project directory by the name given under
`[tool.setuptools.cmdclass]` in pyproject.toml; it is never installed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

ROOT = Path(__file__).resolve().parent
# (source at the top of the repository, destination under connector/_shipped/)
SHIPPED = (("mappings", "mappings"), ("config.example.yaml", "config.example.yaml"))
PACKAGE_DIR = Path("connector") / "_shipped"


def _shipped_files() -> list[tuple[Path, Path]]:
    files: list[tuple[Path, Path]] = []
    for source, dest in SHIPPED:
        path = ROOT / source
        if path.is_dir():
            files += [
                (f, Path(dest) / f.relative_to(path))
                for f in sorted(path.rglob("*"))
                if f.is_file() and "__pycache__" not in f.parts
            ]
        elif path.is_file():
            files.append((path, Path(dest)))
        else:
            # A wheel without its mappings installs fine and fails on first use: fail the build.
            raise FileNotFoundError(f"{path}: shipped with the package but missing")
    return files


class BuildPy(build_py):
    """build_py that also copies mappings/** and config.example.yaml into connector/_shipped/."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads them from the checkout itself
        # A reused build/ folder must not ship a mapping that was deleted since.
        shutil.rmtree(Path(self.build_lib) / PACKAGE_DIR, ignore_errors=True)
        for source, rel in _shipped_files():
            target = Path(self.build_lib) / PACKAGE_DIR / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if not getattr(self, "editable_mode", False):
            outputs += [
                str(Path(self.build_lib) / PACKAGE_DIR / rel) for _, rel in _shipped_files()
            ]
        return outputs


class Sdist(sdist):
    """sdist that carries the shipped files and this module, so a wheel can be built from it."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        extra = ["package_build.py"] + [s.relative_to(ROOT).as_posix() for s, _ in _shipped_files()]
        super().make_release_tree(base_dir, [*files, *(f for f in extra if f not in files)])
