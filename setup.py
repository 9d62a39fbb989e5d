"""Packaging: the metadata is in ``setup.cfg``; this file only ships the embedded default model.

``hub/difiisr-dwt-tiny/`` stays where it is in the repository (one copy in git). A wheel build copies it,
as it is at build time, into the package as ``difiisr_dwt/default_model/``, so that ``difiisr-dwt upscale``
works offline after ``pip install .`` or ``pip install git+URL``; an editable install (or a checkout on
``PYTHONPATH``) uses the repository's folder directly (see ``difiisr_dwt.DEFAULT_MODEL``).
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

MODEL = Path("hub") / "difiisr-dwt-tiny"
PACKAGED_AS = Path("difiisr_dwt") / "default_model"


class BuildPyWithDefaultModel(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # the checkout's own hub/ folder is used
            return
        if not (MODEL / "model_index.json").is_file():
            raise FileNotFoundError(f"{MODEL} is missing: the wheel would have no default model")
        for source in sorted(MODEL.rglob("*")):
            if source.is_file() and "__pycache__" not in source.parts and source.suffix != ".pyc":
                target = Path(self.build_lib) / PACKAGED_AS / source.relative_to(MODEL)
                self.mkpath(str(target.parent))
                self.copy_file(str(source), str(target))


setup(cmdclass={"build_py": BuildPyWithDefaultModel})
