# Copyright 2026 The difiisr-dwt authors. Apache-2.0.
"""How a DifIISR-DWT pipeline saves itself: a self-contained Hub folder that loads with plain diffusers.

A sibling file of ``pipeline_difiisr_dwt.py`` (also in the Hub folder); it imports diffusers only.
:class:`HubFolderMixin` gives the pipeline :meth:`~HubFolderMixin.save_pretrained`, which writes the weights
and configs (diffusers), the code files of :meth:`~HubFolderMixin.code_files` beside them, and
``model_index.json`` in diffusers' remote-code form.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil

from diffusers.utils.dynamic_modules_utils import get_relative_import_files


class HubFolderMixin:
    """``save_pretrained`` for a pipeline whose code (its own file, sibling files and custom components) goes
    into the folder it saves, so that ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)``
    needs nothing but diffusers."""

    #: file name of each custom component's code in a saved folder (``model_index.json`` names it without
    #: ``.py``): the released names, whatever the module is called where the class came from (the
    #: ``difiisr_dwt`` package names the scheduler's module ``scheduling_resshift``, in diffusers' style).
    _component_code_files = {"dwt_encoder": "modeling_dwt_encoder.py", "scheduler": "scheduler_resshift.py"}

    @classmethod
    def code_files(cls, component_classes: dict[str, type]) -> dict[str, str]:
        """Folder-relative path -> source file of every code file a saved pipeline folder carries.

        The pipeline's file and its sibling files (the ones it imports relatively, which diffusers copies beside
        it when it loads the folder's pipeline) go to the folder's root; each custom component's module goes
        to the component's folder, named by :attr:`_component_code_files`.

        Args:
            component_classes: component name -> class, for the components whose code is not diffusers'.
        """
        pipeline_source = inspect.getfile(cls)
        files = {os.path.basename(pipeline_source): pipeline_source}
        for sibling in sorted(get_relative_import_files(pipeline_source)):
            files[os.path.basename(sibling)] = sibling
        for name, component_class in component_classes.items():
            source = inspect.getfile(component_class)
            files[f"{name}/{cls._component_code_files.get(name, os.path.basename(source))}"] = source
        return files

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Save as a self-contained Hub folder: weights, configs, and the code files of :meth:`code_files`.

        ``model_index.json`` gets diffusers' remote-code list form, so the folder loads anywhere with
        ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)``.
        """
        super().save_pretrained(save_directory, **kwargs)
        index_path = os.path.join(save_directory, "model_index.json")
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
        custom = {"dwt_encoder": self.dwt_encoder, "scheduler": self.scheduler}
        for relative, source in self.code_files({name: type(c) for name, c in custom.items()}).items():
            shutil.copyfile(source, os.path.join(save_directory, relative))
            folder, _, file_name = relative.rpartition("/")
            if folder in custom:
                index[folder] = [os.path.splitext(file_name)[0], type(custom[folder]).__name__]
        index["_class_name"] = [os.path.splitext(os.path.basename(inspect.getfile(type(self))))[0], type(self).__name__]
        tmp_path = index_path + ".tmp"
        with open(tmp_path, "w", encoding="utf-8") as f:
            json.dump(index, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp_path, index_path)
