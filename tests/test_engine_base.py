"""The MD engine base: a third engine is one small class that only steps, and the guards
mean the same on the host (ASE engine) and on the device (jax engine)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from ase import units
from ase.io import read

from efa_calc import EFACalculator
from efa_calc.structures import sn2_complex
from md_protocols.common import RunContext
from md_protocols.dynamics import run_dynamics
from md_protocols.engines.base import Block, Engine
from md_protocols.engines.guards import GUARDS, stopping


class HandVerlet(Engine):
    """Velocity Verlet written out with numpy (NVE): the whole of an engine."""

    NAME = "hand-verlet"

    def begin(self, positions, momenta, saved):
        self.x, self.p, self.m = positions[0].copy(), momenta[0].copy(), self.atoms.get_masses()[:, None]
        self.f = self._forces()

    def _forces(self):
        self.atoms.positions = self.x
        return self.atoms.get_forces()

    def _record(self):
        a = self.atoms
        ekin = float(np.sum(self.p ** 2 / (2 * self.m)))
        return {"positions": self.x.copy(), "momenta": self.p.copy(), "forces": self.f.copy(),
                "epot": a.get_potential_energy(), "ekin": ekin, "temperature": 2 * ekin / (3 * self.n * units.kB)}

    def initial_records(self):
        return {k: np.asarray(v)[None, None] for k, v in self._record().items()}

    def start_temperature(self):
        return float(self._record()["temperature"])

    def advance(self, step, todo):
        dt, recs = self.dt_fs * units.fs, []
        for _ in range(todo):
            self.p = self.p + 0.5 * dt * self.f
            self.x = self.x + dt * self.p / self.m
            self.f = self._forces()
            self.p = self.p + 0.5 * dt * self.f
            recs.append(self._record())
        records = {k: np.asarray([r[k] for r in recs])[:, None] for k in recs[0]}
        return Block(np.arange(step + 1, step + todo + 1), records, step + todo)

    def state(self):
        return {"positions": self.x, "momenta": self.p}, {}, {}


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_third_engine_is_one_class_and_matches_the_ase_engine(tmp_path):
    """The hand-written Verlet through the base writes the ASE engine's files: the same
    log columns and steps, energies within 1e-9 eV, positions within 1e-9 Å (float64)."""
    settings = {"steps": 12, "timestep_fs": 0.5, "temperature_K": 300.0, "seed": 1}
    atoms = sn2_complex("Cl", "Br", 3.3, 1.95)
    out = {}
    for name in ("ase", "hand"):
        ctx = RunContext(name, dict(settings), tmp_path / name, progress=False)
        ctx.out.mkdir()
        calc = EFACalculator("sn2-efa", dtype="float64")
        if name == "ase":
            res = run_dynamics(ctx, atoms, calc, "nve")
        else:
            res = HandVerlet(ctx, atoms, calc, "nve").run()
        out[name] = (ctx, res, _rows(ctx.out / "log.csv"), read(ctx.out / "trajectory.extxyz", index=":"))
    (c_a, r_a, log_a, tr_a), (c_h, r_h, log_h, tr_h) = out["ase"], out["hand"]
    assert c_a.status == c_h.status == "completed" and r_a["steps_done"] == r_h["steps_done"] == 12
    assert list(log_a[0]) == list(log_h[0]) and [r["step"] for r in log_a] == [r["step"] for r in log_h]
    for key in ("epot_eV", "ekin_eV", "etot_eV"):
        np.testing.assert_allclose([float(r[key]) for r in log_h], [float(r[key]) for r in log_a], atol=1e-9)
    np.testing.assert_allclose(np.array([f.positions for f in tr_h]), np.array([f.positions for f in tr_a]), atol=1e-9)
    assert abs(r_h["drift_eV_per_atom_per_ps"] - r_a["drift_eV_per_atom_per_ps"]) < 1e-6
    assert (c_h.out / "state.json").read_text().count('"engine": "hand-verlet"') == 1


@pytest.mark.parametrize("obs", [
    {"temperature_K": 900.0, "fmax_eV_A": 10.0, "extent_A": 5.0, "min_distance_A": 1.0},
    {"temperature_K": 1500.0, "fmax_eV_A": 60.0, "extent_A": 25.0, "min_distance_A": 0.2},
    {"temperature_K": float("nan"), "fmax_eV_A": float("nan"), "extent_A": 19.99, "min_distance_A": 0.3},
])
def test_every_guard_means_the_same_on_host_and_device(obs):
    """Each guard's predicate with numpy and with jax.numpy gives the same verdict, and the
    verdicts are the limits' (independent comparisons written out here)."""
    import jax.numpy as jnp

    limits = {"temperature_K": 1000.0, "force_eV_A": 50.0, "max_length_A": 20.0, "min_distance_A": 0.3}
    host = {k: np.float64(v) for k, v in obs.items()}
    device = {k: jnp.asarray(v) for k, v in obs.items()}
    t, f = obs["temperature_K"], obs["fmax_eV_A"]
    expected = {"temperature": not (t <= 1000.0), "force": not (f <= 50.0), "max_length": obs["extent_A"] > 20.0,
                "too_close": obs["min_distance_A"] < 0.3}
    for g in GUARDS:
        if g.name not in expected:
            continue
        assert g.fires(host, limits, np) == bool(g.predicate(device, limits, jnp)) == expected[g.name], g.name
    assert stopping("error", True) == ("temperature", "force", "too_close", "max_length", "envelope",
                                       "envelope_energy")
    assert stopping("warn", False) == ("temperature", "force", "too_close")
