"""Developer tools behind ``python -m fused_sigreg``: check, bench, compile-check, numerics, memory.

``import fused_sigreg`` imports none of them; they import the library, never the reverse."""
