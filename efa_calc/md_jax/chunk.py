"""One XLA call of MD: ``length`` steps of R replicas (``lax.scan`` over steps, ``vmap``
over replicas), with the per-step checks and the records kept every ``interval`` steps.

A step of every replica is: jax-md's ``apply`` (its force call also returns the model
energy, so there is no second forward pass), the observables of the new state (kinetic
energy, temperature from ``jax_md.quantity``, the Nosé–Hoover invariant, largest force,
largest and smallest interatomic distance, the training-envelope tests) and the check bits
of the guards given (:data:`FLAGS`, one bit per guard: ``guard.predicate(obs, limits,
jnp)``).  A step whose pair count exceeds ``capacity`` sets the overflow flag (the whole
chunk must be redone with a larger list); a step raising a bit of ``stop_mask`` is not
kept: every replica freezes at the last good step and the rejected step is reported.

Periodic runs (``md.periodic``): distances are minimum-image ones
(:func:`~efa_calc.md_jax.periodic.minimum_image_distances`), ``extent_A`` is 0 (the
model's ``max_length`` bounds molecules, not cells), and the observables add the cell
volume ``volume_A3`` (the NPT ``box`` guard), the smallest height ``cell_height_A`` (the
``cell_height`` guard: ≤ 2 × cutoff stops the run) and, with an envelope, its density
and cell-height ranges; records add ``cell`` (R, 3, 3) Å and ``stress`` (R, 6) Voigt
eV/Å³ (xx yy zz yz xz xy, ASE's sign: σ = W / V).

Units: Å, Å³, eV (model energies without the checkpoint's shift inside the chunk), eV/Å,
eV/Å³, K, amu·Å/ase_time, g/cm³.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ase import units

from efa_calc.envelope import PHYSICAL_MIN_DISTANCE_A
from efa_calc.md_jax.periodic import cell_heights, minimum_image_distances

__all__ = ["FLAGS", "ChunkResult", "make_chunk"]

#: Check bit of each guard (a guard's ``name`` is its key).
FLAGS = {
    "temperature": 1,      # T not finite or above the temperature guard
    "force": 2,            # a force component above the force guard
    "max_length": 4,       # largest interatomic distance above the model's max_length
    "too_close": 8,        # two atoms closer than PHYSICAL_MIN_DISTANCE_A
    "envelope": 16,        # a pair distance / neighbour count outside the training envelope
    "envelope_energy": 32, # energy per atom outside the training envelope
    "box": 64,             # NPT: the cell volume outside the box guard's range
    "cell_height": 128,    # periodic: a cell height not above twice the cutoff (minimum image fails)
}


class ChunkResult(NamedTuple):
    """What one chunk returns (numpy arrays, host side).

    Attributes:
      state: the jax-md state after ``steps_done`` steps (on the device).
      steps_done: steps kept (< requested when a stopping check fired).
      overflow: the pair list overflowed at some step: discard the whole chunk.
      records: per record (every ``interval`` steps) ``positions`` (K, R, N, 3) Å,
        ``momenta`` (K, R, N, 3) amu·Å/ase_time, ``forces`` (K, R, N, 3) eV/Å,
        ``epot`` / ``ekin`` / ``econs`` (K, R) eV (``epot`` and ``econs`` with the
        checkpoint's energy shift), periodic: ``cell`` (K, R, 3, 3) Å and ``stress``
        (K, R, 6) eV/Å³; only the first ``steps_done // interval`` are valid.
      seen: (R,) OR of the check bits of every kept step (non-stopping ones included).
      stop: ``None``, or a dict of the rejected step: ``step`` (1-based within the chunk),
        ``flags`` (R,), ``temperature_K`` (R,), ``fmax_eV_A`` (R,), ``extent_A`` (R,),
        ``min_distance_A`` (R,), ``positions`` (R, N, 3) Å, ``epot_eV`` (R,); periodic:
        ``volume_A3``, ``cell_height_A`` (R,) and ``cell`` (R, 3, 3) Å.
      epot: (R,) potential energies (eV, with shift) of ``state``.
    """

    state: Any
    steps_done: int
    overflow: bool
    records: dict
    seen: np.ndarray
    stop: dict | None
    epot: np.ndarray


def _conserved(md, state, epot, ekin):
    """E_pot + E_kin, or jax-md's Nosé–Hoover (NVT) or MTK (NPT, with P V) invariant (eV; one replica)."""
    from jax_md import simulate

    if md.ensemble == "npt":
        return simulate.npt_nose_hoover_invariant(lambda R, **kw: epot, state, md.pressure, md.kT)
    if md.ensemble == "nvt" and md.thermostat == "nose-hoover":
        return simulate.nvt_nose_hoover_invariant(lambda R, **kw: epot, state, md.kT)
    return epot + ekin


#: 1 amu/Å³ in g/cm³
_AMU_A3_G_CM3 = units._amu * 1e27


def make_observe(md, guards):
    """``observe(state, limits, epot, cell) -> (obs, bits, pair count)`` of one replica: the
    observables the guards read and the OR of the bits of the guards that fire; ``cell``
    (3, 3) Å or ``None``; ``limits`` = [T K, F eV/Å, V_min Å³, V_max Å³]."""
    from jax_md import quantity

    n, cutoff, static = md.n, md.cutoff, md.static
    check_env, max_length, total_mass = md.check_envelope, md.max_length, float(np.sum(md.masses))

    def observe(state, limits, epot, cell):
        pos = state.position
        dtype = pos.dtype
        ekin = quantity.kinetic_energy(momentum=state.momentum, mass=state.mass)
        temp = quantity.temperature(momentum=state.momentum, mass=state.mass) / units.kB
        dist = minimum_image_distances(pos, cell)  # 1 on the diagonal
        off = ~jnp.eye(n, dtype=bool)
        obs = {"epot": epot, "ekin": ekin, "econs": _conserved(md, state, epot, ekin), "temperature_K": temp,
               "fmax_eV_A": jnp.max(jnp.abs(state.force)),
               "extent_A": jnp.zeros((), dtype) if cell is not None else jnp.max(jnp.where(off, dist, 0.0)),
               "min_distance_A": jnp.min(jnp.where(off, dist, jnp.inf))}
        if cell is not None:
            obs["volume_A3"] = jnp.abs(jnp.linalg.det(cell))
            obs["cell_height_A"] = jnp.min(cell_heights(cell, jnp))
        if check_env:
            within = (dist <= cutoff) & off
            close = jnp.any(within & (dist < jnp.asarray(static.pair_threshold, dtype)))
            crowded = jnp.any(jnp.sum(within, axis=1) > jnp.asarray(static.neighbor_bound))
            if cell is not None:  # a periodic envelope's density and cell-height ranges
                density = total_mass / obs["volume_A3"] * _AMU_A3_G_CM3
                d_lo, d_hi = static.density_bounds
                crowded = crowded | ~((density >= d_lo) & (density <= d_hi)) | (obs["cell_height_A"] < static.height_min)
            e_atom = epot / n
            lo, hi = static.energy_bounds
            obs["structure_outside_envelope"] = close | crowded
            obs["energy_outside_envelope"] = ~((e_atom >= lo) & (e_atom <= hi))
        lim = {"temperature_K": limits[0], "force_eV_A": limits[1], "max_length_A": max_length,
               "min_distance_A": PHYSICAL_MIN_DISTANCE_A, "volume_min_A3": limits[2], "volume_max_A3": limits[3],
               "cell_height_min_A": 2.0 * cutoff}
        bits = jnp.int32(0)
        for g in guards:
            if all(k in obs for k in g.inputs):
                bits |= jnp.where(g.predicate(obs, lim, jnp), FLAGS[g.name], 0)
        return obs, bits.astype(jnp.int32), jnp.sum((dist < cutoff) & off)

    return observe


_STOP_KEYS = ("temperature_K", "fmax_eV_A", "extent_A", "min_distance_A")


def _stop_info(k, bits, obs, new, cell) -> dict:
    info = {"step": k + 1, "flags": bits, "positions": new.position, "epot_eV": obs["epot"],
            **{key: obs[key] for key in _STOP_KEYS}}
    if cell is not None:
        info.update(volume_A3=obs["volume_A3"], cell_height_A=obs["cell_height_A"], cell=cell)
    return info


def make_step(one, capacity: int):
    """The ``lax.scan`` body of one step of every replica: do it (unless the chunk is done,
    stopped or overflowed), keep it unless it overflowed or raised a stopping bit.  The
    carry's ``cur`` holds the model energy (and W) of the kept state."""

    def step(carry, _, n_steps, stop_mask):
        state, cur, k, stopped, overflow, seen, stop = carry
        active = (k < n_steps) & ~stopped & ~overflow

        def do(args):
            state, cur, k, stopped, overflow, seen, stop = args
            new, new_cur, obs, bits, count, cell = one(state, cur)
            over = jnp.any(count > capacity)
            bad = jnp.any((bits & stop_mask) != 0)
            keep = ~bad & ~over
            state = jax.tree_util.tree_map(lambda a, b: jnp.where(keep, a, b), new, state)
            cur = jax.tree_util.tree_map(lambda a, b: jnp.where(keep, a, b), new_cur, cur)
            seen = jnp.where(keep, seen | bits, seen)
            info = _stop_info(k, bits, obs, new, cell)
            stop = jax.tree_util.tree_map(lambda a, b: jnp.where(bad & ~over, a, b), info, stop)
            return state, cur, k + keep.astype(k.dtype), bad & ~over, over, seen, stop

        return jax.lax.cond(active, do, lambda a: a, carry), None

    return step


def _voigt(w, cell):
    """Voigt stress (6,) eV/Å³ (xx yy zz yz xz xy) = W / V of one replica."""
    s = w / jnp.abs(jnp.linalg.det(cell))
    return jnp.stack([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])


def make_chunk(md, length: int, capacity: int, interval: int, guards=()):
    """The chunk function ``(params, state, n_steps, limits, stop_mask, cells) -> (state,
    cur, k, stopped, overflow, seen, stop, records)`` of ``length`` steps (``length //
    interval`` records) at ``capacity`` pair slots; ``limits`` = [temperature guard K, force
    guard eV/Å, V_min Å³, V_max Å³]; ``cells`` (R, 3, 3) Å the fixed cells of a periodic
    NVE/NVT run (``None`` for molecules and NPT); ``cur`` = {``epot`` (R,) eV[, ``virial``
    (R, 3, 3) eV]} of the final state."""
    from jax_md import quantity

    records = length // interval
    observe = make_observe(md, guards)

    def md_chunk(params, state, n_steps, limits, stop_mask, cells):
        replica = md.simulator(params, capacity)
        r = state.position.shape[0]
        fe = jax.vmap(md.force_and_energy(capacity), in_axes=(None, 0) + ((0,) if md.periodic else ()))
        # forces (and energies) of the starting state: states carry none between chunks
        if md.periodic:
            force, epot0, w0 = fe(params, state.position, md.cells_of(state, cells))
            cur0 = {"epot": epot0, "virial": w0}
        else:
            force, epot0 = fe(params, state.position)
            cur0 = {"epot": epot0}
        state = state.set(force=force)

        def one(state, cur):  # one step of every replica
            new, new_cur = jax.vmap(replica)(state, cur, cells)
            cell = md.cells_of(new, cells)
            obs, bits, count = jax.vmap(observe, in_axes=(0, None, 0, 0))(new, limits, new_cur["epot"], cell)
            return new, new_cur, obs, bits, count, cell

        body = make_step(one, capacity)

        def record(carry, _):
            carry, _ = jax.lax.scan(lambda c, x: body(c, x, n_steps, stop_mask), carry, None, length=interval)
            state, cur = carry[0], carry[1]
            epot = cur["epot"]
            ekin = jax.vmap(lambda p, m: quantity.kinetic_energy(momentum=p, mass=m))(state.momentum, state.mass)
            econs = jax.vmap(lambda s, e, k: _conserved(md, s, e, k))(state, epot, ekin)
            out = {"positions": state.position, "momenta": state.momentum, "forces": state.force,
                   "epot": epot, "ekin": ekin, "econs": econs}
            if md.periodic:
                cell = md.cells_of(state, cells)
                out.update(cell=cell, stress=jax.vmap(_voigt)(cur["virial"], cell))
            return carry, out

        dtype = state.position.dtype
        zeros = jnp.zeros(r, dtype)
        stop0 = {"step": jnp.int32(0), "flags": jnp.zeros(r, jnp.int32), "positions": jnp.zeros_like(state.position),
                 "epot_eV": zeros, **{key: zeros for key in _STOP_KEYS}}
        if md.periodic:
            stop0.update(volume_A3=zeros, cell_height_A=zeros, cell=jnp.zeros((r, 3, 3), dtype))
        carry = (state, cur0, jnp.int32(0), jnp.bool_(False), jnp.bool_(False), jnp.zeros(r, jnp.int32), stop0)
        carry, recs = jax.lax.scan(record, carry, None, length=records)
        state, cur, k, stopped, overflow, seen, stop = carry
        return state, cur, k, stopped, overflow, seen, stop, recs

    md_chunk.__name__ = f"md_chunk_{md.ensemble}"
    return md_chunk
