"""jax-md states of R replicas: creation, and the thermostat arrays saved for a resume.

Units (ASE's): positions Å, momenta amu·Å/ase_time, masses amu, Nosé–Hoover chain
positions/momenta/masses in ASE units (eV, amu·Å²/ase_time²), kT in eV.  ``md`` is the
:class:`~efa_calc.md_jax.JaxMD` whose integrator the state is for (it gives ``ensemble``,
``thermostat``, ``n``, ``masses``, ``dt``, ``tau``, ``kT``, ``np_dtype``, ``x64``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["init_state", "thermostat_arrays", "restore_thermostat"]

#: length of the Nosé–Hoover chain (ASE's default)
CHAIN_LENGTH = 3


def init_state(md, positions, momenta, seeds=None, thermostat_state: dict | None = None):
    """The jax-md state of R replicas (forces zero: the chunk computes them first).

    Args:
      positions: (R, N, 3) Å.
      momenta: (R, N, 3) amu·Å/ase_time.
      seeds: (R,) ints for the Langevin noise (default 0…R−1), or (R, 2) uint32 PRNG keys.
      thermostat_state: saved arrays from :func:`thermostat_arrays` (resume).
    """
    from jax_md import simulate

    r = positions.shape[0]
    seeds = np.arange(r) if seeds is None else np.asarray(seeds)
    with jax.enable_x64(md.x64):
        dt = md.np_dtype
        pos = jnp.asarray(positions, dt)
        mom = jnp.asarray(momenta, dt)
        force = jnp.zeros_like(pos)  # computed at the start of every chunk
        mass = jnp.broadcast_to(jnp.asarray(md.masses, dt)[:, None], (r, md.n, 1))
        if md.ensemble == "nve":
            state = simulate.NVEState(pos, mom, force, mass)
        elif md.thermostat == "langevin":
            if seeds.ndim == 2:
                keys = jnp.asarray(seeds, jnp.uint32)
            else:
                keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
            state = simulate.NVTLangevinState(pos, mom, force, mass, keys)
        else:
            chain = simulate.nose_hoover_chain(md.dt, CHAIN_LENGTH, 2, 3, md.tau)
            ke = jnp.sum(mom ** 2 / (2 * mass), axis=(1, 2))
            chains = jax.vmap(lambda k: chain.initialize(3 * md.n, k, md.kT))(ke)
            state = simulate.NVTNoseHooverState(pos, mom, force, mass, chains)
        if thermostat_state:
            state = restore_thermostat(md, state, thermostat_state)
    return state


def thermostat_arrays(md, state) -> dict:
    """Thermostat state to save (numpy): Langevin ``rng`` (R, 2) uint32, Nosé–Hoover
    ``chain_position``/``chain_momentum``/``chain_mass`` (R, 3) and
    ``chain_kinetic_energy`` (R,) in ASE units; nothing for NVE."""
    if md.ensemble == "nve":
        return {}
    if md.thermostat == "langevin":
        return {"rng": np.asarray(state.rng)}
    c = state.chain
    return {"chain_position": np.asarray(c.position), "chain_momentum": np.asarray(c.momentum),
            "chain_mass": np.asarray(c.mass), "chain_kinetic_energy": np.asarray(c.kinetic_energy)}


def restore_thermostat(md, state, saved: dict):
    """``state`` with the thermostat arrays of :func:`thermostat_arrays` put back."""
    if md.ensemble == "nvt" and md.thermostat == "langevin":
        return state.set(rng=jnp.asarray(saved["rng"], jnp.uint32))
    if md.ensemble == "nvt":
        c = state.chain.set(position=jnp.asarray(saved["chain_position"], md.np_dtype),
                            momentum=jnp.asarray(saved["chain_momentum"], md.np_dtype),
                            mass=jnp.asarray(saved["chain_mass"], md.np_dtype),
                            kinetic_energy=jnp.asarray(saved["chain_kinetic_energy"], md.np_dtype))
        return state.set(chain=c)
    return state
