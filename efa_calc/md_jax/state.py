"""jax-md states of R replicas: creation, and the thermostat arrays saved for a resume.

Units (ASE's): positions Å, momenta amu·Å/ase_time, masses amu, Nosé–Hoover chain
positions/momenta/masses in ASE units (eV, amu·Å²/ase_time²), kT in eV.  ``md`` is the
:class:`~efa_calc.md_jax.JaxMD` whose integrator the state is for (it gives ``ensemble``,
``thermostat``, ``n``, ``masses``, ``dt``, ``tau``, ``kT``, ``np_dtype``, ``x64``).

NPT (:mod:`~efa_calc.md_jax.npt`) saves, per replica, the box: ``box_reference`` (3, 3) Å
(jax-md's reference box h₀ᵀ, lattice vectors as columns), ``box_position`` ε_b (V = V₀
exp(3ε_b)), ``box_momentum`` and ``box_mass`` (ASE units), and the two chains
(``chain_*`` of the thermostat, ``barostat_chain_*``) — everything jax-md's state holds,
so a resumed run continues bit for bit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["init_state", "thermostat_arrays", "restore_thermostat"]

#: length of the Nosé–Hoover chain (ASE's default)
CHAIN_LENGTH = 3


def init_state(md, positions, momenta, seeds=None, thermostat_state: dict | None = None, cells=None):
    """The jax-md state of R replicas (forces zero: the chunk computes them first).

    Args:
      positions: (R, N, 3) Å.
      momenta: (R, N, 3) amu·Å/ase_time.
      seeds: (R,) ints for the Langevin noise (default 0…R−1), or (R, 2) uint32 PRNG keys.
      thermostat_state: saved arrays from :func:`thermostat_arrays` (resume).
      cells: (R, 3, 3) Å, rows a, b, c: the starting cells of NPT (unused otherwise).
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
        if md.ensemble == "npt":
            from efa_calc.md_jax.npt import init_npt

            state = init_npt(md, pos, mom, mass, cells)
        elif md.ensemble == "nve":
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
    if md.ensemble == "npt":
        out = {f"box_{k}": np.asarray(getattr(state, f"{k}_box" if k == "reference" else f"box_{k}"))
               for k in ("reference", "position", "momentum", "mass")}
        return {**out, **_chain_arrays(state.thermostat, "chain_"), **_chain_arrays(state.barostat, "barostat_chain_")}
    if md.thermostat == "langevin":
        return {"rng": np.asarray(state.rng)}
    return _chain_arrays(state.chain, "chain_")


_CHAIN_FIELDS = ("position", "momentum", "mass", "kinetic_energy")


def _chain_arrays(chain, prefix: str) -> dict:
    return {prefix + k: np.asarray(getattr(chain, k)) for k in _CHAIN_FIELDS}


def _set_chain(md, chain, saved: dict, prefix: str):
    return chain.set(**{k: jnp.asarray(saved[prefix + k], md.np_dtype) for k in _CHAIN_FIELDS})


def restore_thermostat(md, state, saved: dict):
    """``state`` with the thermostat arrays of :func:`thermostat_arrays` put back."""
    if md.ensemble == "npt":
        box = {("reference_box" if k == "reference" else f"box_{k}"): jnp.asarray(saved[f"box_{k}"], md.np_dtype)
               for k in ("reference", "position", "momentum", "mass")}
        return state.set(thermostat=_set_chain(md, state.thermostat, saved, "chain_"),
                         barostat=_set_chain(md, state.barostat, saved, "barostat_chain_"), **box)
    if md.ensemble == "nvt" and md.thermostat == "langevin":
        return state.set(rng=jnp.asarray(saved["rng"], jnp.uint32))
    if md.ensemble == "nvt":
        return state.set(chain=_set_chain(md, state.chain, saved, "chain_"))
    return state
