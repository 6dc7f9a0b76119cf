"""The calculator as an ASE adapter: settings in ``parameters``, ``set()``, committee
properties through ``get_property``, and the backend protocol it runs on."""

from __future__ import annotations

import numpy as np
import pytest

from efa_calc import EFACalculator
from efa_calc.backends.base import Graph
from efa_calc.backends.single import Potential, tight_slots
from efa_calc.checkpoint import load_checkpoint
from efa_calc.graphs.neighbors import neighbor_pairs
from efa_calc.models import resolve_model
from efa_calc.nn.precision import Precision
from efa_calc.structures import cumulene


def test_todict_lists_the_settings_that_differ_from_the_defaults():
    calc = EFACalculator("cumulene-efa", guard="error")
    assert calc.todict() == {"model": "cumulene-efa", "guard": "error"}
    assert calc.parameters["dtype"] == "float32" and calc.parameters["skin"] == 0.0


def test_set_changes_cheap_settings_in_place_and_rebuilds_for_the_model():
    atoms = cumulene(9, 90.0)
    calc = EFACalculator("cumulene-efa")
    atoms.calc = calc
    e32 = atoms.get_potential_energy()
    backends = calc.potentials
    assert calc.set(guard="off") == {"guard": "off"}
    assert calc.potentials is backends  # no rebuild for the guard
    assert atoms.get_potential_energy() == pytest.approx(e32) and calc.results["extrapolation"]["status"] == "off"
    calc.set(dtype="float64")
    assert calc.potentials is not backends
    e64 = atoms.get_potential_energy()
    assert calc.results["forces"].dtype == np.float64 and abs(e64 - e32) < 1e-3
    calc.set(model="cumulene-local")
    assert calc.name_of_models == ["cumulene-local"] and abs(atoms.get_potential_energy() - e64) > 1e-6


def test_set_refuses_unknown_and_bad_settings_clearly():
    calc = EFACalculator("cumulene-efa")
    with pytest.raises(TypeError, match="'gaurd'.*did you mean 'guard'"):
        calc.set(gaurd="off")
    with pytest.raises(ValueError, match="guard='loud'; allowed: 'warn', 'error', 'off'"):
        calc.set(guard="loud")
    with pytest.raises(ValueError, match="dtype='float16'"):
        calc.set(dtype="float16")
    assert calc.parameters["guard"] == "warn" and calc.parameters["dtype"] == "float32"  # nothing half-applied


def test_committee_spreads_through_get_property():
    atoms = cumulene(9, 45.0)
    committee = EFACalculator.committee(["cumulene-efa", "cumulene-local"])
    atoms.calc = committee
    members = []
    for name in ("cumulene-efa", "cumulene-local"):
        a = atoms.copy()
        a.calc = EFACalculator(name)
        members.append((a.get_potential_energy(), a.get_forces()))
    assert "energy_std" in EFACalculator.implemented_properties
    assert committee.get_property("energy_std", atoms) == pytest.approx(np.std([m[0] for m in members]), rel=1e-5)
    np.testing.assert_allclose(committee.get_property("forces_std", atoms), np.std([m[1] for m in members], axis=0),
                               atol=1e-4)


def test_backend_adds_the_energy_shift_once_and_lowers_publicly():
    ckpt = load_checkpoint(resolve_model("cumulene-efa"))
    atoms = cumulene(9, 30.0)
    pot = Potential(ckpt, "float64")
    graph = Graph(atoms.numbers, atoms.positions, *neighbor_pairs(atoms.positions, ckpt.config.cutoff))
    (pred,) = pot.predict([graph])
    _, _, e_model = pot.run(pot.batch([graph]))
    shift = ckpt.energy_shift.atomic(atoms.numbers)
    assert np.max(np.abs(shift)) > 1.0  # a shift large enough to notice twice
    np.testing.assert_allclose(pred.energies, e_model[: len(atoms)] + shift, rtol=0, atol=1e-10)
    assert pred.energy == pytest.approx(float(np.sum(pred.energies)), abs=1e-9)
    cost = pot.cost([graph], tight_slots([graph]))
    assert cost["flops"] > 1e6 and cost["bytes accessed"] > 1e6
    unchunked = Potential(ckpt, "float64", edge_chunk=0)
    assert unchunked.config.edge_chunk == 0 and unchunked.config.to_dict() == ckpt.config.to_dict()
    with pytest.raises(ValueError, match="edge_chunk=-1"):
        Potential(ckpt, "float64", edge_chunk=-1)


def test_precision_policy():
    with pytest.raises(ValueError, match="dtype='bfloat16'; allowed: 'float32' or 'float64'"):
        Precision("bfloat16")
    p = Precision("float64")
    with p.scope():
        tree = p.cast({"a": np.ones(2, np.float32)})
    assert tree["a"].dtype == np.float64 and p.x64 and not Precision().x64
