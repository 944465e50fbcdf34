"""Every backend, registered with ``fused_sigreg.dispatch`` on import (see README.md here).

Importing this package imports neither triton nor a stage module: each backend loads its stages on
first use."""

from . import eager, extension, triton  # noqa: F401  (each registers itself)
