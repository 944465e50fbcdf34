"""Drop-in replacements with the official codebases' names, signatures, defaults, state and RNG use.

Change one import line and keep the rest of a training script:

- ``fused_sigreg.compat.lejepa``: ``SlicingUnivariateTest``, ``EppsPulley`` (rbalestr-lab/lejepa);
- ``fused_sigreg.compat.visreg``: ``VISReg``, ``SlicedWasserstein``, ``SIGReg`` (HaiyuWu/visreg,
  ``visreg/losses``);
- ``fused_sigreg.compat.rectified_lpjepa``: ``sliced_wasserstein_distance_for_one_view``,
  ``rdmreg_loss``, ``rectified_lp_jepa_loss``, ``sample_lp_distribution`` (YilunKuang/rectified-lp-jepa,
  ``solo/losses/rectified_lpjepa.py``).

Each computes through the package's dispatcher (the fastest usable backend, or ``backend=``, the
only keyword they add) and draws its randomness with exactly the official calls, so a seeded run
gives the same numbers. Only names and signatures follow the official code; none of it is copied.
The README's "Drop-in" section lists what still differs. Import a submodule explicitly: this
package imports none of them.
"""
