"""Packaging glue that pyproject.toml alone cannot express.

The Hydra configs live in ``conf/`` at the repository's top level (a checkout and an editable
install read them there).  A wheel must carry them too, so
``conf/`` is mapped onto the package ``ipsolve.conf``: a regular install finds them in
``ipsolve/conf`` (``ipsolve.runner.conf_dir`` looks there first).  A package-dir mapping was
chosen over Hydra's ``pkg://`` search path because the runner also reads presets directly
(``load_preset``) and a plain directory serves both.
"""
from setuptools import find_packages, setup  # package data: pyproject.toml

setup(
    packages=find_packages(include=["ipsolve", "ipsolve.*"]) + ["ipsolve.conf"],
    package_dir={"ipsolve.conf": "conf"},
)
