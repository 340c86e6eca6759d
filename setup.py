"""The repo root is the package `inkwash` (pyproject.toml maps it with package-dir): its subpackages are
found here and installed under that name, so a new one is never left out of a built wheel."""
from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class BuildPy(build_py):
    """Leaves this file out: as a module of the root package it would be inkwash.setup."""

    def find_package_modules(self, package, package_dir):
        return [found for found in super().find_package_modules(package, package_dir) if found[:2] != ("inkwash", "setup")]


setup(packages=["inkwash", *(f"inkwash.{name}" for name in find_packages(exclude=["tests", "tests.*", "bench*"]))],
      cmdclass={"build_py": BuildPy})
