"""NPT on jax-md's ``simulate.npt_nose_hoover``: the model as jax-md's energy of (positions, box).

jax-md's integrator (Martyna–Tuckerman–Klein, isotropic: the cell is the reference cell
h₀ scaled by (V/V₀)^{1/3}, V = V₀ exp(3 ε_b) with the box coordinate ``box_position`` ε_b)
calls ``energy_fn(R, box=B, perturbation=1 + ε)`` twice per step and differentiates it
itself: with respect to ε at the start of the step, and with respect to R and ε after the
position update.  ∂U/∂ε at ε = 0 is the strain derivative tr W = V tr σ (σ the
calculator's stress, ASE's sign), so jax-md's barostat force α·Σp²/m − tr W − 3PV acts on
exactly the pressure P_inst = 2E_kin/(3V) − tr σ/3 that ``log.csv`` reports
(:mod:`md_protocols.engines.cell`; α = 1 + 1/N).

Efficiency: the energy jax-md differentiates is the model's *linearisation* at the current
point, E + (−F)·(R − R̄) + tr W · ε with E, F, W from one forward+backward pass of the model
(:func:`~efa_calc.md_jax.model.make_force_fn`, R̄ = stop_gradient(R)): value and first
derivatives are exact, and the start-of-step call, at the state of the previous step's
end, reuses that step's E and W instead of a second model evaluation.  One model call per
step, as in NVE/NVT.

Coordinates: **real** (Cartesian, unwrapped), ``space.periodic_general(box,
fractional_coordinates=False, wrapped=False)``.  jax-md 0.2.29's position update
``shift_fn(R, R (e^x − 1) + …, box=B_new)`` is the MTK update in real coordinates; with
``fractional_coordinates=True`` it also adds the dilation term R (e^x − 1) to *fractional*
positions (a spurious, unit-inconsistent drift: the NPT invariant of 108 Lennard-Jones
atoms drifted by 29 ε in 3000 steps, 24 ε at half the timestep, against 0.15 ε
→ 0.035 ε at half the timestep in real coordinates).

Parameters (units: ASE's, as the engine's; times given in fs):

* thermostat: Nosé–Hoover chain of 3 on the particles, τ_T = ``tdamp_fs`` (jax-md's
  ``thermostat_kwargs["tau"]``; masses Q₁ = 3N k_B T τ_T², Qₖ = k_B T τ_T²);
* barostat: the box mass W_b = 3 (N + 1) k_B T τ_P² with τ_P = ``pdamp_fs`` (jax-md's
  ``barostat_kwargs["tau"]``, the period of the volume oscillation, typically ~1000
  steps; ASE's ``IsotropicMTKNPT(pdamp=…)`` plays the same role), and a Nosé–Hoover
  chain of 3 on the box momentum with the same τ_P;
* ``pressure_bar`` (bar) → jax-md's ``pressure`` in eV/Å³ (× ``ase.units.bar``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["npt_simulator", "linearised_energy", "init_npt", "npt_cells", "NPT_CHAIN_LENGTH"]

#: Nosé–Hoover chain length of the thermostat and of the barostat
NPT_CHAIN_LENGTH = 3
_CHAIN = {"chain_length": NPT_CHAIN_LENGTH, "chain_steps": 2, "sy_steps": 3}


def _functions(md, energy_fn):
    from jax_md import simulate, space

    _, shift_fn = space.periodic_general(jnp.eye(3), fractional_coordinates=False, wrapped=False)
    return simulate.npt_nose_hoover(energy_fn, shift_fn, md.dt, md.pressure, md.kT,
                                    barostat_kwargs={**_CHAIN, "tau": md.tau_p},
                                    thermostat_kwargs={**_CHAIN, "tau": md.tau})


def linearised_energy(fe, params, tap: dict | None = None):
    """jax-md's ``energy_fn(R, box=B, perturbation=1 + ε)`` (eV) of the model: its
    linearisation E − F·(R − R̄) + tr W · ε at (R̄, B) (value and first derivatives in R and
    ε exact; ``fe`` the periodic force function, B jax-md's box = cellᵀ, Å); leaves E and
    W in ``tap``."""
    tap = {} if tap is None else tap

    def energy_fn(R, box=None, perturbation=1.0, **unused):
        r0 = jax.lax.stop_gradient(R)
        f, e, w = fe(params, r0, jax.lax.stop_gradient(box).T)
        tap["energy"], tap["virial"] = e, w
        return e - jnp.sum(f * (R - r0)) + jnp.trace(w) * (perturbation - 1.0)

    return energy_fn


def npt_simulator(md, fe, params):
    """``replica(state, cur) -> (state, {"epot", "virial"})``: one NPT step of one replica;
    ``cur`` holds the model energy (eV) and W (3, 3) eV of ``state`` (see the module
    docstring); ``fe`` the periodic force function."""
    tap: dict = {}
    model = linearised_energy(fe, params, tap)

    def energy_fn(R, box=None, perturbation=1.0, **unused):
        tap["calls"] += 1
        if tap["calls"] == 1:  # start of the step: the state the previous step ended in
            return tap["cur"]["epot"] + jnp.trace(tap["cur"]["virial"]) * (perturbation - 1.0)
        return model(R, box=box, perturbation=perturbation)

    _, apply = _functions(md, energy_fn)
    apply = getattr(apply, "__wrapped__", apply)

    def replica(state, cur):
        tap.update(calls=0, cur=jax.tree_util.tree_map(jax.lax.stop_gradient, cur))
        new = apply(state)
        if tap["calls"] != 2:  # guards the reuse above against another jax-md's call pattern
            raise RuntimeError(f"jax-md's npt_nose_hoover called the energy {tap['calls']} times per step, not 2")
        return new, {"epot": tap.pop("energy"), "virial": tap.pop("virial")}

    return replica


def npt_cells(state):
    """(R, 3, 3) cells (rows a, b, c, Å) of NPT states of R replicas (jax-md's box transposed)."""
    from jax_md import simulate

    return jnp.swapaxes(jax.vmap(simulate.npt_box)(state), 1, 2)


def init_npt(md, pos, mom, mass, cells):
    """NPT states of R replicas at rest (box momentum and chains zero) in ``cells`` (R, 3, 3)
    Å (the reference box h₀ᵀ, ε_b = 0); forces zero (the chunk computes them first)."""
    from jax_md import simulate

    r, n = pos.shape[0], md.n
    dt = pos.dtype
    thermostat = simulate.nose_hoover_chain(md.dt, NPT_CHAIN_LENGTH, 2, 3, md.tau)
    barostat = simulate.nose_hoover_chain(md.dt, NPT_CHAIN_LENGTH, 2, 3, md.tau_p)
    ke = jnp.sum(mom ** 2 / (2 * mass), axis=(1, 2))
    zero = jnp.zeros(r, dt)
    box_mass = jnp.full(r, 3 * (n + 1) * md.kT * md.tau_p ** 2, dt)
    return simulate.NPTNoseHooverState(
        pos, mom, jnp.zeros_like(pos), mass, jnp.swapaxes(jnp.asarray(cells, dt), 1, 2), zero, zero, box_mass,
        jax.vmap(lambda _: barostat.initialize(1, jnp.zeros((), dt), md.kT))(zero),
        jax.vmap(lambda k: thermostat.initialize(3 * n, k, md.kT))(ke))
