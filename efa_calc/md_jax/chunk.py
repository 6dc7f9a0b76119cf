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

Units: Å, eV (model energies without the checkpoint's shift inside the chunk), eV/Å, K,
amu·Å/ase_time.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ase import units

from efa_calc.envelope import PHYSICAL_MIN_DISTANCE_A

__all__ = ["FLAGS", "ChunkResult", "make_chunk"]

#: Check bit of each guard (a guard's ``name`` is its key).
FLAGS = {
    "temperature": 1,      # T not finite or above the temperature guard
    "force": 2,            # a force component above the force guard
    "max_length": 4,       # largest interatomic distance above the model's max_length
    "too_close": 8,        # two atoms closer than PHYSICAL_MIN_DISTANCE_A
    "envelope": 16,        # a pair distance / neighbour count outside the training envelope
    "envelope_energy": 32, # energy per atom outside the training envelope
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
        checkpoint's energy shift); only the first ``steps_done // interval`` are valid.
      seen: (R,) OR of the check bits of every kept step (non-stopping ones included).
      stop: ``None``, or a dict of the rejected step: ``step`` (1-based within the chunk),
        ``flags`` (R,), ``temperature_K`` (R,), ``fmax_eV_A`` (R,), ``extent_A`` (R,),
        ``min_distance_A`` (R,), ``positions`` (R, N, 3) Å, ``epot_eV`` (R,).
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
    """E_pot + E_kin, or jax-md's Nosé–Hoover invariant (eV; one replica)."""
    from jax_md import simulate

    if md.ensemble == "nvt" and md.thermostat == "nose-hoover":
        return simulate.nvt_nose_hoover_invariant(lambda R, **kw: epot, state, md.kT)
    return epot + ekin


def make_observe(md, guards):
    """``observe(state, limits, epot) -> (obs, bits, pair count)`` of one replica: the
    observables the guards read and the OR of the bits of the guards that fire."""
    from jax_md import quantity

    n, cutoff, static = md.n, md.cutoff, md.static
    check_env, max_length = md.check_envelope, md.max_length

    def observe(state, limits, epot):
        pos = state.position
        dtype = pos.dtype
        ekin = quantity.kinetic_energy(momentum=state.momentum, mass=state.mass)
        temp = quantity.temperature(momentum=state.momentum, mass=state.mass) / units.kB
        d = pos[None, :, :] - pos[:, None, :]
        dist = jnp.sqrt(jnp.sum(d * d, axis=-1) + jnp.eye(n, dtype=dtype))  # 1 on the diagonal
        off = ~jnp.eye(n, dtype=bool)
        obs = {"epot": epot, "ekin": ekin, "econs": _conserved(md, state, epot, ekin), "temperature_K": temp,
               "fmax_eV_A": jnp.max(jnp.abs(state.force)), "extent_A": jnp.max(jnp.where(off, dist, 0.0)),
               "min_distance_A": jnp.min(jnp.where(off, dist, jnp.inf))}
        if check_env:
            within = (dist <= cutoff) & off
            close = jnp.any(within & (dist < jnp.asarray(static.pair_threshold, dtype)))
            crowded = jnp.any(jnp.sum(within, axis=1) > jnp.asarray(static.neighbor_bound))
            e_atom = epot / n
            lo, hi = static.energy_bounds
            obs["structure_outside_envelope"] = close | crowded
            obs["energy_outside_envelope"] = ~((e_atom >= lo) & (e_atom <= hi))
        lim = {"temperature_K": limits[0], "force_eV_A": limits[1], "max_length_A": max_length,
               "min_distance_A": PHYSICAL_MIN_DISTANCE_A}
        bits = jnp.int32(0)
        for g in guards:
            if all(k in obs for k in g.inputs):
                bits |= jnp.where(g.predicate(obs, lim, jnp), FLAGS[g.name], 0)
        return obs, bits.astype(jnp.int32), jnp.sum((dist < cutoff) & off)

    return observe


def _stop_info(k, bits, obs, new) -> dict:
    return {"step": k + 1, "flags": bits, "temperature_K": obs["temperature_K"], "fmax_eV_A": obs["fmax_eV_A"],
            "extent_A": obs["extent_A"], "min_distance_A": obs["min_distance_A"], "positions": new.position,
            "epot_eV": obs["epot"]}


def make_step(one, capacity: int):
    """The ``lax.scan`` body of one step of every replica: do it (unless the chunk is done,
    stopped or overflowed), keep it unless it overflowed or raised a stopping bit."""

    def step(carry, _, n_steps, stop_mask):
        state, epot, k, stopped, overflow, seen, stop = carry
        active = (k < n_steps) & ~stopped & ~overflow

        def do(args):
            state, epot, k, stopped, overflow, seen, stop = args
            new, obs, bits, count = one(state)
            over = jnp.any(count > capacity)
            bad = jnp.any((bits & stop_mask) != 0)
            keep = ~bad & ~over
            state = jax.tree_util.tree_map(lambda a, b: jnp.where(keep, a, b), new, state)
            epot = jnp.where(keep, obs["epot"], epot)
            seen = jnp.where(keep, seen | bits, seen)
            info = _stop_info(k, bits, obs, new)
            stop = jax.tree_util.tree_map(lambda a, b: jnp.where(bad & ~over, a, b), info, stop)
            return state, epot, k + keep.astype(k.dtype), bad & ~over, over, seen, stop

        return jax.lax.cond(active, do, lambda a: a, carry), None

    return step


def make_chunk(md, length: int, capacity: int, interval: int, guards=()):
    """The chunk function ``(params, state, n_steps, limits, stop_mask) -> (state, epot, k,
    stopped, overflow, seen, stop, records)`` of ``length`` steps (``length // interval``
    records) at ``capacity`` pair slots; ``limits`` = [temperature guard K, force guard
    eV/Å]."""
    from jax_md import quantity

    records = length // interval
    observe = make_observe(md, guards)

    def md_chunk(params, state, n_steps, limits, stop_mask):
        tap: dict = {}
        apply = md.simulator(params, capacity, tap)
        r = state.position.shape[0]
        # forces (and energies) of the starting state: states carry none between chunks
        force, epot0 = jax.vmap(md.force_and_energy(capacity), in_axes=(None, 0))(params, state.position)
        state = state.set(force=force)

        def replica(state):
            new = apply(state)
            return new, tap.pop("energy")

        def one(state):  # one step of every replica
            new, epot = jax.vmap(replica)(state)
            obs, bits, count = jax.vmap(observe, in_axes=(0, None, 0))(new, limits, epot)
            return new, obs, bits, count

        body = make_step(one, capacity)

        def record(carry, _):
            carry, _ = jax.lax.scan(lambda c, x: body(c, x, n_steps, stop_mask), carry, None, length=interval)
            state, epot = carry[0], carry[1]
            ekin = jax.vmap(lambda p, m: quantity.kinetic_energy(momentum=p, mass=m))(state.momentum, state.mass)
            econs = jax.vmap(lambda s, e, k: _conserved(md, s, e, k))(state, epot, ekin)
            out = {"positions": state.position, "momenta": state.momentum, "forces": state.force,
                   "epot": epot, "ekin": ekin, "econs": econs}
            return carry, out

        dtype = state.position.dtype
        zeros = jnp.zeros(r, dtype)
        stop0 = {"step": jnp.int32(0), "flags": jnp.zeros(r, jnp.int32), "temperature_K": zeros, "fmax_eV_A": zeros,
                 "extent_A": zeros, "min_distance_A": zeros, "positions": jnp.zeros_like(state.position),
                 "epot_eV": zeros}
        carry = (state, epot0, jnp.int32(0), jnp.bool_(False), jnp.bool_(False), jnp.zeros(r, jnp.int32), stop0)
        carry, recs = jax.lax.scan(record, carry, None, length=records)
        state, epot, k, stopped, overflow, seen, stop = carry
        return state, epot, k, stopped, overflow, seen, stop, recs

    md_chunk.__name__ = f"md_chunk_{md.ensemble}"
    return md_chunk
