"""Why the jax engine's NPT uses real, not fractional, coordinates (jax-md 0.2.29).

108 Lennard-Jones atoms (σ = ε = 1, r_cut 2.5, ρ = 0.8, kT = 1.5, P = 1, τ_P = 0.2) under
``simulate.npt_nose_hoover`` with ``space.periodic_general(box, fractional_coordinates=…)``:
the largest drift of ``npt_nose_hoover_invariant`` over 3000 steps of dt = 0.002 (and 6000
of 0.001), sampled every 100 steps.  Measured (CPU, float64): fractional 29.2 (dt 0.002)
and 24.1 (dt 0.001), not converging; real 0.145 and 0.035, second order.  jax-md's position update
``shift_fn(R, R (e^x − 1) + …, box=B_new)`` is the MTK update in real coordinates; with
fractional R it also dilates the fractional positions.  Reduced LJ units throughout.

    python benchmarks/jaxmd_npt_coordinates.py
"""

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)
from jax_md import energy, quantity, simulate, space  # noqa: E402


def main() -> None:
    n, rho = 108, 0.8
    side = (n / rho) ** (1 / 3)
    k = round((n / 4) ** (1 / 3))
    base = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    frac = np.concatenate([(base + np.array([i, j, m])) / k for i in range(k) for j in range(k) for m in range(k)])
    frac = (frac + np.random.default_rng(0).normal(0, 0.01, frac.shape)) % 1
    box = jnp.eye(3) * side
    for dt, steps in ((0.002, 3000), (0.001, 6000)):
        for fractional in (True, False):
            disp, shift = space.periodic_general(box, fractional_coordinates=fractional)
            efn = energy.lennard_jones_pair(disp, sigma=1.0, epsilon=1.0, r_onset=2.0, r_cutoff=2.5)
            init, apply = simulate.npt_nose_hoover(efn, shift, dt, pressure=1.0, kT=1.5, barostat_kwargs={"tau": 0.2})
            state = init(jax.random.PRNGKey(0), jnp.asarray(frac if fractional else frac * side), box, kT=1.5)
            step = jax.jit(apply)
            h0 = float(simulate.npt_nose_hoover_invariant(efn, state, 1.0, 1.5))
            drift, volumes = [], []
            for i in range(steps):
                state = step(state)
                if i % 100 == 0:
                    drift.append(float(simulate.npt_nose_hoover_invariant(efn, state, 1.0, 1.5)) - h0)
                    volumes.append(float(quantity.volume(3, simulate.npt_box(state))))
            print(f"dt {dt}: {'fractional' if fractional else 'real':10s} max|H - H0| {np.abs(drift).max():.4g}  "
                  f"V {min(volumes):.1f}-{max(volumes):.1f}", flush=True)


if __name__ == "__main__":
    main()
