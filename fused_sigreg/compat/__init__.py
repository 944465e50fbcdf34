"""Drop-in replacements with the official codebases' names, signatures, defaults, state and RNG use.

Change one import line and keep the rest of a training script:

- ``fused_sigreg.compat.lejepa``: ``SlicingUnivariateTest``, ``EppsPulley`` (rbalestr-lab/lejepa);
- ``fused_sigreg.compat.lightly``: ``SIGReg``, ``LeJEPALoss``, ``VISRegLoss`` and the loss functions of
  ``lightly.loss.lejepa_loss`` / ``lightly.loss.visreg_loss`` (PyPI lightly 1.6);
- ``fused_sigreg.compat.stable_pretraining``: ``EppsPulley``, ``SlicedEppsPulley``, ``LeJEPA._compute_loss``
  (PyPI stable-pretraining 0.1.8, ``stable_pretraining.methods.lejepa``);
- ``fused_sigreg.compat.jepa_science``: ``SIGReg``, ``sigreg_loss``, ``epps_pulley_quadrature`` (PyPI
  jepa-science 0.1.0);
- ``fused_sigreg.compat.visreg``: ``VISReg``, ``SlicedWasserstein``, ``SIGReg`` (HaiyuWu/visreg,
  ``visreg/losses``);
- ``fused_sigreg.compat.rectified_lpjepa``: ``sliced_wasserstein_distance_for_one_view``,
  ``rdmreg_loss``, ``rectified_lp_jepa_loss``, ``sample_lp_distribution`` (YilunKuang/rectified-lp-jepa,
  ``solo/losses/rectified_lpjepa.py``).

Each computes through the package's dispatcher (the fastest usable backend, or ``backend=``, the
only keyword they add) and draws its randomness with exactly the official calls, outside
torch.compile's graph so that compiled code draws the same numbers: a seeded run gives the official
numbers. Only names and signatures follow the official code; none of it is copied. The README's
"Drop-in" section and docs/compat.md list what still differs. Import a submodule explicitly: this
package imports none of them.
"""
