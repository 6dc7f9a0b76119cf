"""Datasets of labelled structures: I/O, splits, energy shifts and padded training batches.

A :class:`Dataset` is a list of molecules with total energies (eV) and forces (eV/Å),
read from and written to

* extended XYZ (ASE; energies in ``info['energy']``, forces in the ``forces`` array),
* ASE databases (``.db``),
* the reference npz layout (``positions (F,N,3)``, ``atomic_numbers (F,N)``, ``energy (F,)``,
  ``forces (F,N,3)``, optional ``node_mask (F,N)`` for padded frames).
"""

from efa_calc.data.dataset import (
    Dataset,
    fit_energy_shift,
    read_dataset,
    read_datasets,
    split_indices,
    write_dataset,
)
from efa_calc.data.batches import BatchSampler, TrainingBatch

__all__ = [
    "Dataset",
    "read_dataset",
    "read_datasets",
    "write_dataset",
    "split_indices",
    "fit_energy_shift",
    "BatchSampler",
    "TrainingBatch",
]
