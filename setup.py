"""Build hook (the project is configured in pyproject.toml).

The bundled checkpoints live in the repository's top-level ``models/<name>/`` (next to
their training configs and data).  So that a wheel or a plain ``pip install .`` carries
them, ``build_py`` copies every ``models/<name>/`` that holds a ``config.json`` — its
``config.json``, ``params.npz`` and model card ``README.md`` — into the package as
``efa_calc/bundled_models/<name>/``, where :mod:`efa_calc.models` finds them.  Editable
installs read ``models/`` directly.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
MODEL_FILES = ("config.json", "params.npz", "README.md")


class build_py_with_models(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "efa_calc" / "bundled_models"
        for ckpt in sorted((HERE / "models").iterdir()):
            if not (ckpt / "config.json").is_file():
                continue
            dest = target / ckpt.name
            dest.mkdir(parents=True, exist_ok=True)
            for name in MODEL_FILES:
                if (ckpt / name).is_file():
                    shutil.copyfile(ckpt / name, dest / name)


setup(cmdclass={"build_py": build_py_with_models})
