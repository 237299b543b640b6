"""The optional compiled header reader; everything else is declared in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pixels_sql.dicom._fastmeta",
            ["pixels_sql/dicom/_fastmeta.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            # Without a compiler the install still succeeds: fastmeta.py has the same loop.
            optional=True,
        )
    ]
)
