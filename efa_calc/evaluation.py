"""Comparing models with reference data: errors of scans and datasets (eV, eV/Å).

Relative energies are compared offset-free: both curves have their mean removed, so a
constant shift between model and reference does not count, the shape does.
"""

from __future__ import annotations

import numpy as np
from ase.stress import full_3x3_to_voigt_6_stress

from efa_calc.data import Dataset

__all__ = ["relative_rmse", "predict", "dataset_errors", "scan_report", "reference_labels", "evaluate_frames",
           "error_metrics", "parity_plot", "predictions_to_frames"]


def relative_rmse(pred: np.ndarray, ref: np.ndarray) -> float:
    """RMSE (eV) of (pred − mean pred) against (ref − mean ref)."""
    pred, ref = np.asarray(pred, np.float64), np.asarray(ref, np.float64)
    return float(np.sqrt(np.mean(((pred - pred.mean()) - (ref - ref.mean())) ** 2)))


def predict(calc, ds: Dataset, batch_size: int = 16) -> tuple[np.ndarray, list[np.ndarray]]:
    """Model energies (eV) and forces (eV/Å) for every frame of ``ds``."""
    from ase import Atoms

    res = calc.evaluate_batch([Atoms(z, r) for z, r in zip(ds.numbers, ds.positions)], batch_size=batch_size)
    return np.array([r["energy"] for r in res]), [np.asarray(r["forces"], np.float64) for r in res]


def dataset_errors(calc, ds: Dataset) -> dict:
    """MAE/RMSE of total energies (eV per frame) and force components (eV/Å)."""
    e, f = predict(calc, ds)
    de = e - ds.energy
    df = np.concatenate([(a - b).ravel() for a, b in zip(f, ds.forces)])
    return {"energy_mae_eV": float(np.mean(np.abs(de))), "energy_rmse_eV": float(np.sqrt(np.mean(de**2))),
            "forces_mae_eV_A": float(np.mean(np.abs(df))), "forces_rmse_eV_A": float(np.sqrt(np.mean(df**2))),
            "num_frames": len(ds)}


def scan_report(calc, ds: Dataset, x: np.ndarray) -> dict:
    """Errors of one scan (frames ordered along ``x``): offset-free energy RMSE, force MAE,
    reference barrier (max − min) and the positions of both minima."""
    e, f = predict(calc, ds)
    df = np.concatenate([(a - b).ravel() for a, b in zip(f, ds.forces)])
    return {"x": np.asarray(x).tolist(), "reference_eV": ds.energy.tolist(), "model_eV": e.tolist(),
            "relative_energy_rmse_eV": relative_rmse(e, ds.energy), "forces_mae_eV_A": float(np.mean(np.abs(df))),
            "reference_span_eV": float(np.ptp(ds.energy)), "model_span_eV": float(np.ptp(e)),
            "reference_minimum_at": float(np.asarray(x)[np.argmin(ds.energy)]),
            "model_minimum_at": float(np.asarray(x)[np.argmin(e)])}


# ---------------------------------------------------------------- efa-calc eval
def reference_labels(atoms, energy_key: str = "energy", forces_key: str = "forces"):
    """Reference energy (eV) and forces (eV/Å) stored with a frame, or ``None``.

    Looked up in the frame's stored calculator results (what ``ase.io.read`` makes of an
    extxyz ``energy=`` / ``forces`` column), then in ``atoms.info[energy_key]`` and
    ``atoms.arrays[forces_key]`` (e.g. ``REF_energy``/``REF_forces`` as MACE writes them).
    """
    results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    e = results.get(energy_key, atoms.info.get(energy_key))
    f = results.get(forces_key, atoms.arrays.get(forces_key))
    e = None if e is None else float(e)
    f = None if f is None else np.asarray(f, np.float64)
    return e, f


def reference_stress(atoms):
    """Reference stress (Voigt, eV/Å³, ASE's sign) stored with a periodic frame, or ``None``."""
    results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    s = results.get("stress", atoms.info.get("stress"))
    if s is None or not atoms.pbc.any():
        return None
    s = np.asarray(s, np.float64)
    return full_3x3_to_voigt_6_stress(s) if s.shape == (3, 3) else s.reshape(6)


def _errors(d: np.ndarray) -> dict:
    d = np.asarray(d, np.float64).ravel()
    return {"mae": float(np.mean(np.abs(d))), "rmse": float(np.sqrt(np.mean(d**2))), "mean": float(np.mean(d)),
            "count": int(d.size)}


def evaluate_frames(calc, frames, batch_size: int = 16, progress: bool = True) -> list[dict]:
    """``calc.evaluate_batch`` over ``frames`` in chunks of ``batch_size``, with a tqdm bar."""
    from tqdm.auto import tqdm

    out: list[dict] = []
    with tqdm(total=len(frames), unit="frame", desc="efa-calc eval", disable=not progress) as bar:
        for start in range(0, len(frames), batch_size):
            chunk = frames[start : start + batch_size]
            out += calc.evaluate_batch(chunk, batch_size=batch_size)
            bar.update(len(chunk))
    return out


def error_metrics(frames, predictions: list[dict], energy_key: str = "energy", forces_key: str = "forces") -> dict:
    """MAE and RMSE against the frames' reference labels (frames without labels are skipped).

    Returns ``{"num_frames", "energy_eV" (per frame), "energy_per_atom_eV", "forces_eV_A"
    (per component), "forces_per_element_eV_A": {symbol: ...}}`` and, for periodic frames
    with a reference stress, ``"stress_eV_A3"`` (per Voigt component), each with ``mae``,
    ``rmse``, ``mean`` (the signed mean error, prediction − reference) and ``count``;
    empty dict when no frame carries reference energies or forces.
    """
    de, de_atom, df, df_el, ds = [], [], [], {}, []
    for a, p in zip(frames, predictions):
        s_ref = reference_stress(a)
        if s_ref is not None and "stress" in p:
            ds.append(np.asarray(p["stress"], np.float64) - s_ref)
        e_ref, f_ref = reference_labels(a, energy_key, forces_key)
        if e_ref is not None:
            de.append(p["energy"] - e_ref)
            de_atom.append((p["energy"] - e_ref) / len(a))
        if f_ref is not None and f_ref.shape == (len(a), 3):
            diff = np.asarray(p["forces"], np.float64) - f_ref
            df.append(diff.ravel())
            for sym in set(a.get_chemical_symbols()):
                df_el.setdefault(sym, []).append(diff[np.array(a.get_chemical_symbols()) == sym].ravel())
    out: dict = {}
    if de:
        out["num_frames_with_energy"] = len(de)
        out["energy_eV"] = _errors(np.array(de))
        out["energy_per_atom_eV"] = _errors(np.array(de_atom))
    if df:
        out["forces_eV_A"] = _errors(np.concatenate(df))
        out["forces_per_element_eV_A"] = {s: _errors(np.concatenate(v)) for s, v in sorted(df_el.items())}
    if ds:
        out["stress_eV_A3"] = _errors(np.concatenate(ds))
    return out


def parity_plot(frames, predictions: list[dict], path, title: str = "", energy_key: str = "energy",
                forces_key: str = "forces") -> None:
    """Predicted against reference energies per atom (eV/atom) and force components (eV/Å), as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e_ref, e_pred, f_ref, f_pred, f_sym, formulas = [], [], [], [], [], []
    for a, p in zip(frames, predictions):
        e, f = reference_labels(a, energy_key, forces_key)
        if e is not None:
            e_ref.append(e / len(a))
            e_pred.append(p["energy"] / len(a))
            formulas.append(a.get_chemical_formula())
        if f is not None and f.shape == (len(a), 3):
            f_ref.append(f)
            f_pred.append(np.asarray(p["forces"], np.float64))
            f_sym += a.get_chemical_symbols()
    fig, ax = plt.subplots(1, 2, figsize=(10, 4.5))
    if e_ref:  # per-atom energies relative to the mean reference of each chemical formula
        e_ref, e_pred, formulas = np.array(e_ref), np.array(e_pred), np.array(formulas)
        for formula in np.unique(formulas):
            m = formulas == formula
            mean = e_ref[m].mean()
            e_ref[m] -= mean
            e_pred[m] -= mean
        ax[0].plot(e_ref, e_pred, ".", ms=3)
        lo, hi = min(e_ref.min(), e_pred.min()), max(e_ref.max(), e_pred.max())
        ax[0].plot([lo, hi], [lo, hi], "k-", lw=0.7)
    ax[0].set(xlabel="reference energy − formula mean (eV/atom)", ylabel="predicted energy − formula mean (eV/atom)",
              title="energies")
    if f_ref:
        fr, fp = np.concatenate(f_ref), np.concatenate(f_pred)
        syms = np.repeat(np.array(f_sym), 3)
        for s in sorted(set(f_sym)):
            m = syms == s
            ax[1].plot(fr.ravel()[m], fp.ravel()[m], ".", ms=2, label=s)
        lo, hi = min(fr.min(), fp.min()), max(fr.max(), fp.max())
        ax[1].plot([lo, hi], [lo, hi], "k-", lw=0.7)
        ax[1].legend(markerscale=4)
    ax[1].set(xlabel="reference force component (eV/Å)", ylabel="predicted (eV/Å)", title="forces")
    for a in ax:
        a.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def predictions_to_frames(frames, predictions: list[dict], energy_key: str = "energy", forces_key: str = "forces"):
    """Copies of ``frames`` carrying the predictions for an extxyz file: ``info["EFA_energy"]``
    (eV), ``arrays["EFA_forces"]`` (eV/Å), ``arrays["EFA_energies"]`` (eV per atom),
    committee spreads ``EFA_energy_std``/``EFA_forces_std``, ``info["EFA_extrapolation"]``
    (and its reasons), ``info["EFA_stress"]`` (Voigt, eV/Å³) for periodic frames, plus
    reference labels as ``REF_energy``/``REF_forces``/``REF_stress``."""
    out = []
    for a, p in zip(frames, predictions):
        e_ref, f_ref = reference_labels(a, energy_key, forces_key)
        b = a.copy()
        b.calc = None
        if e_ref is not None:
            b.info["REF_energy"] = e_ref
        if f_ref is not None and f_ref.shape == (len(a), 3):
            b.arrays["REF_forces"] = f_ref
        b.info["EFA_energy"] = float(p["energy"])
        b.arrays["EFA_forces"] = np.asarray(p["forces"], np.float64)
        b.arrays["EFA_energies"] = np.asarray(p["energies"], np.float64)
        if "stress" in p:
            b.info["EFA_stress"] = np.asarray(p["stress"], np.float64)  # Voigt xx yy zz yz xz xy, eV/Å³
            if reference_stress(a) is not None:
                b.info["REF_stress"] = reference_stress(a)
        if "energy_std" in p:
            b.info["EFA_energy_std"] = float(p["energy_std"])
            b.arrays["EFA_forces_std"] = np.asarray(p["forces_std"], np.float64)
        ext = p.get("extrapolation") or {}
        b.info["EFA_extrapolation"] = ext.get("status", "")
        if ext.get("reasons"):
            b.info["EFA_extrapolation_reasons"] = "; ".join(ext["reasons"])
        out.append(b)
    return out
