"""Builds cnnjax's one compiled part: the oneDNN convolutions of ``cnnjax/ops/_onednn.cc``.

Everything else is declared in ``pyproject.toml``. The extension is optional: where oneDNN's
wheels are not installable (they are built for Linux on x86-64) or no C++ compiler is
found, the install goes on without it and CPU convolutions use cnnjax's own lowering.
The library is a plain shared object with XLA FFI handlers, loaded by ``ctypes`` (not a
Python module); it links against ``libdnnl.so.3`` from the ``onednn-cpu-gomp`` wheel,
which ``cnnjax/ops/_onednn.py`` loads first.
"""

import importlib.metadata
import importlib.util
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError


def _wheel_dir(distribution: str, name: str) -> str:
    """The directory of the file ``name`` that the installed ``distribution`` holds."""
    for f in importlib.metadata.distribution(distribution).files or ():
        if f.name == name:
            return str(Path(f.locate()).resolve().parent)
    raise FileNotFoundError(f"{distribution} holds no {name}")


class BuildOnednn(build_ext):
    def build_extension(self, ext: Extension) -> None:
        try:
            jaxlib = Path(importlib.util.find_spec("jaxlib").origin).parent
            include = _wheel_dir("onednn-devel-cpu-gomp", "dnnl.hpp")
            lib = _wheel_dir("onednn-cpu-gomp", "libdnnl.so.3")
        except (ImportError, AttributeError, FileNotFoundError) as e:
            # An optional extension is skipped on CompileError; anything else fails the install.
            raise CompileError(f"oneDNN convolutions not built: {e}") from e
        ext.include_dirs += [str(jaxlib / "include"), include]
        ext.library_dirs.append(lib)
        ext.extra_link_args.append("-l:libdnnl.so.3")  # the name it is loaded by
        super().build_extension(ext)

    def get_export_symbols(self, ext: Extension) -> list[str]:
        return []  # a plain shared library: no PyInit_ function to export


setup(
    ext_modules=[
        Extension(
            "cnnjax.ops._onednn_conv",
            sources=["cnnjax/ops/_onednn.cc"],
            language="c++",
            extra_compile_args=["-std=c++17", "-O2"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildOnednn},
)
