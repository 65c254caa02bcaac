"""Self-contained remote code: ``save_pretrained`` writes the model's source as flat ``.py`` files.

transformers' ``trust_remote_code`` loader copies the module named in ``config.json``'s
``auto_map`` and, recursively, every file it imports as ``from .name import ...`` from the same
folder; it supports neither sub-packages nor ``..`` imports. The package keeps its layout (the one
place the code lives) and this module flattens it on save:

- every module reachable from the config and modeling modules through relative imports
  (including imports indented inside functions, e.g. lazily imported backends) is written as
  ``<path relative to the package, dots as underscores>.py``: ``hf_loglinear.kernels.chunk`` ->
  ``kernels_chunk.py``;
- its relative imports are rewritten to those flat names: in ``kernels/chunk.py``,
  ``from ..levels import x`` -> ``from .levels import x`` and ``from .block import y`` ->
  ``from .kernels_block import y``. A lazy (indented) import of a module the package lacks becomes
  ``raise ImportError(...)``: the flat copy then fails at that call exactly where the package would.

``__init__.py`` files are never written, so nothing the models need may live in them. A model
loaded from such a folder saves again the same way (its flat package is its own root).

API: ``RemoteCodeMixin`` (mixed into a model's ``PreTrainedModel`` base, with
``_remote_code_classes = {"AutoModel": ..., "AutoModelForCausalLM": ...}`` naming classes of the
modeling module) makes ``save_pretrained`` write ``auto_map`` and the files;
``flat_sources(module_names)`` returns ``{file name: source}``; ``write_remote_code(folder,
module_names)`` writes them atomically.
"""
from __future__ import annotations

import importlib.util
import os
import re
import sys
import tempfile

__all__ = ["RemoteCodeMixin", "flat_sources", "write_remote_code"]

# `from .x import a` / `from ..x.y import (a, b)` at any indentation (the lines transformers' loader follows).
_RELATIVE_IMPORT = re.compile(
    r"^(?P<indent>[ \t]*)from[ \t]+(?P<dots>\.+)(?P<name>[\w.]*)[ \t]+import[ \t]+(?P<names>\([^)]*\)|[^\n]*)",
    re.MULTILINE,
)
_ABSOLUTE_SELF_IMPORT = r"^[ \t]*(from|import)[ \t]+{root}\b"


def _root_package(module_name: str) -> str:
    """The package a model's modules live in: the one holding the modeling module."""
    return module_name.rpartition(".")[0]


def _flat_name(module_name: str, root: str) -> str:
    if not module_name.startswith(root + "."):
        raise ValueError(f"{module_name} is outside the package {root}: remote code can only carry modules of {root}")
    return module_name[len(root) + 1 :].replace(".", "_")


def _origin(module_name: str) -> str | None:
    try:
        spec = importlib.util.find_spec(module_name)
    except ModuleNotFoundError:
        return None
    return spec.origin if spec is not None and spec.origin and spec.origin.endswith(".py") else None


def _source(module_name: str) -> str:
    origin = _origin(module_name)
    if origin is None:
        raise ValueError(f"remote code needs the source of {module_name}, which cannot be found")
    with open(origin, encoding="utf-8") as f:
        return f.read()


def _flatten(module_name: str, root: str) -> tuple[str, list[str]]:
    """Source of ``module_name`` with relative imports rewritten flat, and the modules it imports."""
    text = _source(module_name)
    if re.search(_ABSOLUTE_SELF_IMPORT.format(root=re.escape(root)), text, re.MULTILINE):
        raise ValueError(f"{module_name} imports {root} absolutely; use relative imports so it can be flattened")
    package = module_name.rpartition(".")[0]
    needed = []

    def rewrite(match):
        if not match["name"]:
            raise ValueError(
                f"{module_name}: `from {match['dots']} import ...` imports a package __init__, which remote code "
                "does not carry; import from a module instead"
            )
        target = importlib.util.resolve_name(match["dots"] + match["name"], package)
        if match["indent"] and _origin(target) is None:
            # A lazily imported optional module this install lacks (e.g. a GPU backend still to come):
            # the flat copy fails at that call, as the package would.
            return f"{match['indent']}raise ImportError({target + ' is not part of this installation'!r})"
        needed.append(target)
        return f"{match['indent']}from .{_flat_name(target, root)} import {match['names']}"

    return _RELATIVE_IMPORT.sub(rewrite, text), needed


def flat_sources(module_names: list[str]) -> dict[str, str]:
    """``{"<flat name>.py": source}`` for ``module_names`` and everything they import relatively."""
    root = _root_package(module_names[0])
    sources, todo = {}, list(module_names)
    while todo:
        name = todo.pop()
        flat = _flat_name(name, root) + ".py"
        if flat in sources:
            continue
        sources[flat], needed = _flatten(name, root)
        todo.extend(needed)
    return sources


def _write_atomic(path: str, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".py")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_remote_code(folder: str | os.PathLike, module_names: list[str]) -> list[str]:
    """Write the flat sources into ``folder``; returns the file names."""
    os.makedirs(folder, exist_ok=True)
    sources = flat_sources(module_names)
    for name, text in sorted(sources.items()):
        _write_atomic(os.path.join(folder, name), text)
    return sorted(sources)


class RemoteCodeMixin:
    """``save_pretrained`` also writes ``auto_map`` and the model's flat source files."""

    _remote_code_classes: dict[str, str] = {}

    def _remote_code_modules(self) -> tuple[str, str]:
        """(config module, modeling module), both in the modeling module's package.

        transformers loads a remote config through its own file list, i.e. from another
        package than the model; the model's package holds its own copy of that module.
        """
        model_module = type(self).__module__
        config_file = type(self.config).__module__.rpartition(".")[2]
        return f"{_root_package(model_module)}.{config_file}", model_module

    def save_pretrained(self, save_directory, *args, is_main_process: bool = True, **kwargs):
        config_module, model_module = self._remote_code_modules()
        model_file = model_module.rpartition(".")[2]
        for auto_class, class_name in self._remote_code_classes.items():
            if not hasattr(sys.modules[model_module], class_name):
                raise ValueError(f"{model_module} has no class {class_name} to register for {auto_class}")
        self.config.auto_map = {
            "AutoConfig": f"{config_module.rpartition('.')[2]}.{type(self.config).__name__}",
            **{auto: f"{model_file}.{name}" for auto, name in self._remote_code_classes.items()},
        }
        super().save_pretrained(save_directory, *args, is_main_process=is_main_process, **kwargs)
        if is_main_process:
            write_remote_code(save_directory, [config_module, model_module])
