"""The optional packages of ``bralib[export]``, imported only when an export needs them.

``import bralib`` and ``bralib --help`` work without them; a missing one gives an ImportError that names the
package, what needed it and the install command, instead of a bare ``ModuleNotFoundError``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from bralib.errors import BralibError

# The packages of the [export] extra (their import names are their distribution names).
EXPORT_PACKAGES = ("onnx", "onnxruntime", "onnxscript", "safetensors")
INSTALL = "pip install 'bralib[export]'"


class MissingExportPackage(BralibError, ImportError):
    """A package of the ``[export]`` extra is not installed (the CLI prints it as one line)."""


def require(module: str, purpose: str) -> ModuleType:
    """``importlib.import_module(module)``, or :class:`MissingExportPackage` saying what to install.

    Args:
        module: e.g. ``"onnxruntime"`` or ``"safetensors.torch"``.
        purpose: what needs it, for the message (``"checking an ONNX file"``).
    """
    top = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ImportError as err:
        if err.name is not None and err.name.split(".")[0] != top:
            raise  # the package is there but one of its own imports failed: show that error as it is
        raise MissingExportPackage(
            f"{purpose} needs the package {top!r}, which is not installed: {INSTALL} "
            f"(installs {', '.join(EXPORT_PACKAGES)})"
        ) from err
