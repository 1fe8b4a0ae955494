"""Diffusion: the variance-preserving diffusion model under flowforge's protocol, and the
stochastic samplers (DDPM ancestral steps, DDIM, the Euler–Maruyama reverse SDE) that every
model on an affine Gaussian path can use.

Importing it registers the samplers in :data:`flowforge.dynamics.SOLVERS` (``method="ddpm"``,
``"ddim"``, ``"euler-maruyama"``); ``import flowforge`` does.
"""

__all__: list[str] = []
