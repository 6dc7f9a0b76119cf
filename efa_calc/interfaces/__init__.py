"""Interfaces to other simulation codes (LAMMPS, ...); each needs its own optional extra."""
