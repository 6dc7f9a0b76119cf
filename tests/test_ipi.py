"""`efa-calc ipi` serves forces over the i-PI socket protocol (ASE's server side drives it)."""

from __future__ import annotations

import os
import sys
import uuid

import numpy as np
from ase import Atoms
from ase.calculators.socketio import SocketIOCalculator

from efa_calc import EFACalculator, save_checkpoint


def test_ipi_client_matches_direct_calls(tmp_path, reference_checkpoint, reference_predictions):
    model = save_checkpoint(reference_checkpoint("sn2_local_rcut5"), tmp_path / "sn2-local")
    z = reference_predictions["sn2_local_rcut5/atomic_numbers"][5]
    pos = reference_predictions["sn2_local_rcut5/positions"][5]
    atoms = Atoms(z, pos)
    atoms.write(tmp_path / "start.xyz")
    sock = f"efa-{uuid.uuid4().hex[:8]}"
    cmd = (f"{sys.executable} -m efa_calc.cli ipi --model {model} --structure {tmp_path / 'start.xyz'} "
           f"--unix {sock} --dtype float64")

    def launch(atoms_, properties, port=None, unixsocket=None):
        import subprocess
        return subprocess.Popen(cmd, shell=True, cwd=os.getcwd())

    direct = EFACalculator(model, dtype="float64")
    with SocketIOCalculator(unixsocket=sock, launch_client=launch, timeout=600) as server:
        for shift in (0.0, 0.05):
            a = atoms.copy()
            a.positions[0] += shift
            a.calc = server
            e, f = a.get_potential_energy(), a.get_forces()
            b = a.copy()
            b.calc = direct
            assert abs(e - b.get_potential_energy()) < 1e-8
            np.testing.assert_allclose(f, b.get_forces(), atol=1e-8)
