"""Evaluate the bundled ``argon-local`` model on its held-out test split; write its model card.

    python models/evaluate_argon.py      # needs models/argon-local and models/data/argon

The test split, ``models/data/argon/argon_lj_test.extxyz`` (52 frames), has other sizes
(192–500 atoms) **and** other state points than training (README of the data); the bounds apply
to it.  The interface test split, ``argon_lj_interface_test.extxyz`` (32 frames: liquid slabs in
vacuum and gas at other sizes and temperatures), is reported beside it.  Every frame is evaluated with :class:`efa_calc.EFACalculator` in float64 and in float32 and
compared with LAMMPS's labels (``pair_style lj/smooth/linear 8.5``).  Errors:

* energy: MAE and RMSE of E/N in meV/atom;
* forces: MAE and RMSE over all force components in meV/Å;
* stress: MAE and RMSE over the six Voigt components in eV/Å³ (ASE's sign, no kinetic part);

overall, per kind (liquid, solid; interface, gas) and per size.  Writes ``models/argon-local/evaluation.json``
and ``models/argon-local/README.md`` (the model card).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ase.io import read  # noqa: E402

from efa_calc import EFACalculator  # noqa: E402
from efa_calc.checkpoint import load_checkpoint  # noqa: E402

NAME = "argon-local"
TEST = HERE / "data" / "argon" / "argon_lj_test.extxyz"
INTERFACE_TEST = HERE / "data" / "argon" / "argon_lj_interface_test.extxyz"
#: issue 22's acceptance bounds on the test split (MAE).
BOUNDS = {"energy_mae_meV_atom": 0.2, "forces_mae_meV_A": 3.0, "stress_mae_eV_A3": 3e-5}


def errors(pred: list[dict], frames) -> dict:
    """Energy (meV/atom), force (meV/Å) and stress (eV/Å³) MAE/RMSE of predictions against labels."""
    de = np.array([(p["energy"] - a.get_potential_energy()) / len(a) for p, a in zip(pred, frames)]) * 1e3
    df = np.concatenate([(p["forces"] - a.get_forces()).ravel() for p, a in zip(pred, frames)]) * 1e3
    ds = np.concatenate([p["stress"] - a.get_stress() for p, a in zip(pred, frames)])
    return {"energy_mae_meV_atom": float(np.mean(np.abs(de))), "energy_rmse_meV_atom": float(np.sqrt(np.mean(de**2))),
            "forces_mae_meV_A": float(np.mean(np.abs(df))), "forces_rmse_meV_A": float(np.sqrt(np.mean(df**2))),
            "stress_mae_eV_A3": float(np.mean(np.abs(ds))), "stress_rmse_eV_A3": float(np.sqrt(np.mean(ds**2))),
            "num_frames": len(frames)}


def predict(model, frames, dtype: str) -> list[dict]:
    calc = EFACalculator(model, dtype=dtype)
    out = []
    for a in frames:  # one at a time: the test cells differ in size
        b = a.copy()
        b.calc = calc
        out.append({"energy": b.get_potential_energy(), "forces": b.get_forces(), "stress": b.get_stress()})
    return out


def grouped_errors(model, frames, dtype: str) -> dict:
    """:func:`errors` of all ``frames`` and per ``kind`` and ``num_atoms``."""
    pred = predict(model, frames, dtype)
    groups = {"all": list(range(len(frames)))}
    for key in ("kind", "num_atoms"):
        for v in sorted({a.info[key] for a in frames}):
            groups[f"{key}={v}"] = [k for k, a in enumerate(frames) if a.info[key] == v]
    return {g: errors([pred[k] for k in idx], [frames[k] for k in idx]) for g, idx in groups.items()}


def evaluate(model=HERE / NAME, frames=None, interface_frames=None) -> dict:
    frames = read(TEST, ":") if frames is None else frames
    interface_frames = read(INTERFACE_TEST, ":") if interface_frames is None else interface_frames
    res = {}
    for dtype in ("float64", "float32"):
        res[dtype] = grouped_errors(model, frames, dtype)
        res[f"interfaces_{dtype}"] = grouped_errors(model, interface_frames, dtype)
    res["bounds"] = BOUNDS
    res["meets_bounds"] = {dt: all(res[dt]["all"][k] <= b for k, b in BOUNDS.items()) for dt in ("float64", "float32")}
    return res


def _row(label: str, e: dict) -> str:
    return (f"| {label} | {e['num_frames']} | {e['energy_mae_meV_atom']:.3f} | {e['energy_rmse_meV_atom']:.3f} | "
            f"{e['forces_mae_meV_A']:.2f} | {e['forces_rmse_meV_A']:.2f} | {e['stress_mae_eV_A3']:.2e} | "
            f"{e['stress_rmse_eV_A3']:.2e} |")


def write_model_card(res: dict) -> Path:
    ck = load_checkpoint(HERE / NAME)
    p, cfg, env = ck.provenance, ck.config, ck.envelope
    tr = p["training"]
    run = HERE.parent / "runs" / NAME / "summary.json"
    wall = json.loads(run.read_text()).get("wall_time_s") if run.is_file() else p.get("training_wall_time_s")
    head = ("| group | frames | energy MAE (meV/atom) | energy RMSE (meV/atom) | force MAE (meV/Å) | force RMSE (meV/Å) "
            "| stress MAE (eV/Å³) | stress RMSE (eV/Å³) |\n|---|---|---|---|---|---|---|---|")
    f64, f32 = res["float64"], res["float32"]
    verdict = {True: "meets", False: "**misses**"}
    lines = [
        f"# {NAME}", "",
        "Validation model (issue 22): a small local message-passing model of LAMMPS argon "
        "(`pair_style lj/smooth/linear 8.5`, ε = 0.010323 eV, σ = 3.405 Å) in **periodic cells**, trained on "
        "energies (eV), forces (eV/Å) and stress (eV/Å³, ASE's sign). Its job is to make every difference between "
        "efa-calc and LAMMPS (energies, forces, stress, NPT densities) an error of ours: the reference is a known "
        "classical potential. Elements: Ar. Periodic (`\"periodic\": true` in `config.json`).", "",
        "```python", "from efa_calc import EFACalculator", f'atoms.calc = EFACalculator("{NAME}")   # atoms with a cell, pbc=True',
        "atoms.get_potential_energy(); atoms.get_forces(); atoms.get_stress()   # eV, eV/Å, eV/Å³ (Voigt)", "```", "",
        "## Data",
        f"- train/valid: `models/data/argon/argon_lj.extxyz` ({p['data']['num_frames']} frames, split "
        f"{p['data']['split']['train']}/{p['data']['split']['valid']}, seed {p['data']['split_seed']}; sha256 "
        f"`{(p['data']['sha256'] or '')[:16]}…`; with `argon_lj_interface.extxyz` appended before the split): liquid NVT/NPT "
        "85–130 K and strained fcc 40–75 K, 100–256 atoms; liquid slabs in vacuum (85–115 K) and gas (95, 140 K at "
        "0.1–0.7 g/cm³), 100–300 atoms",
        "- test: `models/data/argon/argon_lj_test.extxyz` (52 frames, 192–500 atoms, other state points: liquid "
        "92.5/120 K at 1.15/1.40 g/cm³, the 94.4 K / 1 atm NPT liquid, fcc at 50/68 K); interface test: "
        "`argon_lj_interface_test.extxyz` (32 frames: 400-atom slabs at 94.4/108 K, 200-atom gas at 120 K); see "
        "`models/data/argon/README.md`",
        "", "## Model",
        f"- message passing: {cfg.num_iterations} iteration(s), cutoff {cfg.cutoff} Å (the potential's own: 8.5 Å), "
        f"{cfg.num_features} features, max_degree {cfg.mp_max_degree}, {cfg.num_basis_functions} {cfg.radial_basis} "
        "radial functions (uniform in r over 0 … cutoff); no long-range block",
        f"- {p.get('num_parameters', 0):,} parameters; per-element energy shift "
        + ", ".join(f"{k} {1e3 * v:.3f} meV" for k, v in ck.energy_shift.per_element.items()),
        "", "## Training",
        f"- `efa-calc train models/configs/{NAME}.toml`: {p.get('training_steps')} Adam steps of {tr['graphs_per_batch']} cells, "
        f"learning rate {tr['learning_rate']} → {tr['final_learning_rate']}, loss {tr['energy_weight']}·MSE(E) + "
        f"{tr['forces_weight']}·MSE(F) + {tr['stress_weight']:g}·MSE(σ) (eV², (eV/Å)², (eV/Å³)²), EMA {tr['ema_decay']}; "
        f"checkpoint = EMA parameters at the best validation step ({p.get('best_step')})",
        f"- wall time {wall / 60:.0f} min on {p['hardware']} (a loaded, shared machine); git commit `{(p.get('git_commit') or '')[:10]}`"
        if wall else f"- hardware: {p['hardware']}",
        "", "## Test-split errors (other sizes and state points than training; `python models/evaluate_argon.py`)", "",
        f"Acceptance (issue 22, MAE): energy ≤ {BOUNDS['energy_mae_meV_atom']} meV/atom, forces ≤ "
        f"{BOUNDS['forces_mae_meV_A']} meV/Å, stress ≤ {BOUNDS['stress_mae_eV_A3']:.0e} eV/Å³. float64: "
        f"{verdict[res['meets_bounds']['float64']]} them; float32: {verdict[res['meets_bounds']['float32']]} them ("
        + ", ".join(f"{k.split('_')[0]} {verdict[f64['all'][k] <= b]}" for k, b in BOUNDS.items()) + " in float64).", "",
        "float64:", "", head, *[_row(k, v) for k, v in f64.items()], "",
        "float32:", "", head, *[_row(k, v) for k, v in f32.items()], "",
        "Interface test split (liquid slabs in vacuum and gas; no bound set), float64:", "", head,
        *[_row(k, v) for k, v in res["interfaces_float64"].items()], "",
        "![learning curves](learning_curves.png)", "",
        "## Training envelope (the calculator's guard)",
        f"- densities {env.density_g_cm3[0]:.3f}–{env.density_g_cm3[1]:.3f} g/cm³, shortest cell height "
        f"{env.cell_height_A[0]:.2f} Å, smallest Ar–Ar distance {env.min_distance['Ar-Ar']:.2f} Å, at most "
        f"{env.max_neighbors['Ar']} neighbours within {env.cutoff} Å; per-atom energy {1e3 * env.energy_per_atom[0]:.1f} … "
        f"{1e3 * env.energy_per_atom[1]:.1f} meV/atom (relative to the shift)",
        "", "## Limits",
        "- argon only, and only this truncated LJ argon (weaker bound than real argon: see the data README);",
        "- dense fluid and fcc solid 40–130 K, liquid surfaces and gas up to 140 K; no other elements (the calculator "
        "refuses them);",
        ("- forces meet the 3 meV/Å target" if f64["all"]["forces_mae_meV_A"] <= BOUNDS["forces_mae_meV_A"]
         else "- **forces miss the 3 meV/Å target**") + f" ({f64['all']['forces_mae_meV_A']:.2f} meV/Å test MAE, float64). "
        "History on the shared 2-core CPU: 16 radial functions and 2500 steps stalled at 14 meV/Å; 32 functions "
        "and 3000 steps reached 7.1 meV/Å (stress 2.5e-5 eV/Å³, NPT pressures +23 bar too high); 32 functions, "
        "6000 steps and a 10× stress weight 4.6 meV/Å (validation error = test error, still falling: under-fitted, "
        "NPT density +0.7–2 % from a −14 bar pressure bias); 64 functions and 12 000 steps met all three bounds but, "
        "without surfaces or gas in training, was off by 1.8 (interfaces) and 3.9 meV/atom (gas) and its NPT liquid "
        "cavitated; this model: the same recipe with the 66 interface and gas frames;",
        "- the model is local (cutoff 9 Å): it is size-extensive, so larger cells than in training are in its domain; "
        "cells with a height below the training minimum are flagged by the guard.",
    ]
    path = HERE / NAME / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    res = evaluate()
    (HERE / NAME / "evaluation.json").write_text(json.dumps(res, indent=1))
    print(json.dumps({dt: res[dt]["all"] for dt in ("float64", "float32")}, indent=1))
    print("meets bounds:", res["meets_bounds"], "->", write_model_card(res))


if __name__ == "__main__":
    main()
