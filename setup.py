"""The optional compiled accelerator (tracebridge._speedups). Everything else is in pyproject.toml.

``optional=True``: without a C compiler (or Python headers) the build of the extension fails quietly and
the install goes on; tracebridge then runs its pure-Python code, which writes the same output.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tracebridge._speedups",
            ["tracebridge/_speedups.c"],
            optional=True,
            extra_compile_args=["-O2"] if __import__("os").name != "nt" else [],
        )
    ]
)
