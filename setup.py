"""Build steps pyproject.toml cannot declare: the optional compiled header reader, and the
pipeline's SQL scripts (kept in the checkout's sql/) copied into the package of a wheel."""

import shutil
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

PIPELINE_SCRIPTS = Path(__file__).resolve().parent / "sql"


class BuildPyWithPipeline(build_py):
    """Also put sql/*.sql into pixels_sql/sql of the build, so that `pixels-sql demo` and the
    default pipeline work from an installed wheel (an editable install reads sql/ itself)."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "pixels_sql" / "sql"
        target.mkdir(parents=True, exist_ok=True)
        for script in sorted(PIPELINE_SCRIPTS.glob("*.sql")):
            shutil.copyfile(script, target / script.name)
        # sql/deid/: pixels-sql deidentify's statements
        (target / "deid").mkdir(exist_ok=True)
        for script in sorted((PIPELINE_SCRIPTS / "deid").glob("*.sql")):
            shutil.copyfile(script, target / "deid" / script.name)


setup(
    cmdclass={"build_py": BuildPyWithPipeline},
    ext_modules=[
        Extension(
            "pixels_sql.dicom._fastmeta",
            ["pixels_sql/dicom/_fastmeta.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            # Without a compiler the install still succeeds: fastmeta.py has the same loop.
            optional=True,
        )
    ],
)
