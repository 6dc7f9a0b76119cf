"""Climbing-image NEB of Cl⁻ + CH3Br → ClCH3 + Br⁻ (ase.mep) with the sn2-efa model."""

from ase.mep import NEB
from ase.optimize import BFGS, FIRE

from efa_calc import EFACalculator
from efa_calc.structures import sn2_complex

reactant = sn2_complex("Cl", "Br", d_cx=3.3, d_cy=1.95)           # Cl⁻···CH3Br
product = sn2_complex("Cl", "Br", d_cx=1.79, d_cy=3.4, umbrella_deg=70.5)  # ClCH3···Br⁻
for end in (reactant, product):
    end.calc = EFACalculator("sn2-efa")
    BFGS(end, logfile=None).run(fmax=0.02)

images = [reactant] + [reactant.copy() for _ in range(7)] + [product]
for im in images[1:-1]:
    im.calc = EFACalculator("sn2-efa")  # separate instances share the compiled model
neb = NEB(images, climb=True, method="improvedtangent")
neb.interpolate("idpp")
FIRE(neb).run(fmax=0.05)
e = [im.get_potential_energy() for im in images]
print(f"barrier {max(e) - e[0]:.3f} eV, reaction energy {e[-1] - e[0]:+.3f} eV")
