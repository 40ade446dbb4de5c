"""The built-in synthetic CCTA phantom cohort (what it models and why: README, The phantom cohort).

Each patient is drawn from ``np.random.default_rng([seed, index])`` (`anatomy.sample_spec`): scanner
(pixel spacing, increment, thickness, PSF, noise, tube voltage and contrast), a tapering coronary
segment on a smooth oblique 3D course in epicardial fat beside the myocardium, eccentric plaques
(calcified, non-calcified lipid-rich or fibrous, mixed) with burden and remodelling, and distractors
(contrast-filled chamber, an enhanced vein, an unlabelled calcified spot). The volume is rendered by
area integration of the analytic geometry, a Gaussian PSF and correlated noise (`render`, `scene`);
labels come from the same geometry at voxel centres.

Public API:
    generate_case(index, seed, cfg) -> PhantomCase
    generate_cohort(out, patients, seed, cfg, processes) -> list[dict]
    sample_spec(index, seed, cfg) -> PatientSpec

Command line: ``python -m plaque.data.phantom --out DIR [--patients N] [--seed S] [--params FILE]
[--profile NAME] [--processes P]``.
"""

from plaque.data.phantom.anatomy import CASE_MIX, PatientSpec, Plaque, Scanner, sample_spec
from plaque.data.phantom.case import PhantomCase, case_name, generate_case
from plaque.data.phantom.cohort import COHORT_FILE, generate_cohort, write_case

__all__ = [
    "CASE_MIX",
    "COHORT_FILE",
    "PatientSpec",
    "PhantomCase",
    "Plaque",
    "Scanner",
    "case_name",
    "generate_case",
    "generate_cohort",
    "sample_spec",
    "write_case",
]
