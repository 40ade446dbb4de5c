"""Fake but realistic identifying DICOM tags for phantom patients.

Every value is fictitious and drawn deterministically from the patient's random stream. Names and
institutions are long, distinctive strings so that a leak into processed outputs is easy to detect.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from plaque.data.phantom.anatomy import PatientSpec

SURNAMES = (
    "TANAKA",
    "WATANABE",
    "KOBAYASHI",
    "YAMAMOTO",
    "NAKAMURA",
    "TAKAHASHI",
    "MORIKAWA",
    "HASEGAWA",
    "FUJIWARA",
    "MATSUMOTO",
    "KOWALSKI",
    "LINDQVIST",
    "ANDERSSON",
    "HOFFMANN",
    "WEISSMANN",
    "SCHNEIDER",
    "MORETTI",
    "BERNARDINI",
    "CASTELLANOS",
    "VILLANUEVA",
    "FITZGERALD",
    "OKONKWO",
    "ADEYEMI",
    "NAKASHIMA",
    "DUBROVSKY",
    "PETROSYAN",
    "KARAMANLIS",
    "OYELARAN",
    "BRANDVOLD",
    "ESPERANZA",
    "RAVENSCROFT",
    "THORNBURY",
)
GIVEN_MALE = (
    "HARUTO",
    "SOTARO",
    "KENTARO",
    "YOSHIHIRO",
    "TAKUMI",
    "RYUNOSUKE",
    "MATTHIAS",
    "LEOPOLD",
    "ALESSANDRO",
    "FREDERIK",
    "BARTHOLOMEW",
    "CHIDUBEM",
    "SEBASTIANO",
    "WOJCIECH",
    "GUNNAR",
    "EVANDER",
)
GIVEN_FEMALE = (
    "HINATA",
    "SAKURAKO",
    "YUKINOKO",
    "MINAKO",
    "CHIHIRO",
    "AYUMI",
    "ROSALIND",
    "GWENDOLYN",
    "FRANCESCA",
    "INGEBORG",
    "MAGDALENA",
    "OLUWASEUN",
    "PERPETUA",
    "ANASTASIA",
    "SOLVEIG",
    "EVANGELINE",
)
PHYSICIANS = (
    "KUROSAWA^ICHIRO",
    "VANDERMEER^ELISABETH",
    "ABERNATHY^CORNELIUS",
    "SHIMIZU^MASAYUKI",
    "GALLAGHER^PRUDENCE",
    "OYELOWO^BABATUNDE",
    "LINDGREN^ASTRID",
    "SANTORELLI^VITTORIO",
)
INSTITUTIONS = (
    "HOSHIGAOKA MEMORIAL CARDIOVASCULAR HOSPITAL",
    "BRIGHTWATER VALLEY HEART INSTITUTE",
    "LINDENHOF UNIVERSITY KLINIKUM",
    "SAINT ALDRIC GENERAL HOSPITAL",
    "KITAMINATO CITY MEDICAL CENTER",
    "RIVERMOUTH REGIONAL CARDIAC CENTRE",
)
VENDORS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "SIEMENS": (("SOMATOM Force", "SOMATOM Definition Flash"), ("Bv36", "B26f", "I26f")),
    "GE MEDICAL SYSTEMS": (("Revolution CT", "Discovery CT750 HD"), ("STANDARD", "DETAIL")),
    "CANON_MEC": (("Aquilion ONE", "Aquilion Prime SP"), ("FC43", "FC03")),
    "Philips": (("IQon Spectral CT", "Brilliance iCT"), ("XCB", "CB")),
}


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def make_tags(rng: np.random.Generator, spec: PatientSpec) -> dict[str, str]:
    """DICOM tags by keyword for ``write_series``: identifying ones (fictitious) and acquisition ones.

    Args:
        rng: the patient's tag stream.
        spec: the patient (tube voltage and slice thickness are copied into the tags).

    Returns:
        Keyword -> string value.
    """
    sex = "M" if rng.random() < 0.6 else "F"
    given = _pick(rng, GIVEN_MALE if sex == "M" else GIVEN_FEMALE)
    study = dt.date(2018, 1, 1) + dt.timedelta(days=int(rng.integers(0, 7 * 365)))
    age = int(rng.integers(38, 86))
    birth = dt.date(study.year - age, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365)))
    if (birth.month, birth.day) > (study.month, study.day):
        age -= 1
    hh, mm, ss = int(rng.integers(7, 19)), int(rng.integers(0, 60)), int(rng.integers(0, 60))
    vendor = _pick(rng, tuple(VENDORS))
    models, kernels = VENDORS[vendor]
    n_digits = int(rng.integers(7, 9))
    mrn = str(int(rng.integers(10 ** (n_digits - 1), 10**n_digits)))
    return {
        "PatientName": f"{_pick(rng, SURNAMES)}^{given}",
        "PatientID": mrn,
        "PatientBirthDate": birth.strftime("%Y%m%d"),
        "PatientSex": sex,
        "PatientAge": f"{age:03d}Y",
        "AccessionNumber": f"CT{study.strftime('%y')}{int(rng.integers(10**7, 10**8))}",
        "InstitutionName": _pick(rng, INSTITUTIONS),
        "ReferringPhysicianName": _pick(rng, PHYSICIANS),
        "StudyDate": study.strftime("%Y%m%d"),
        "SeriesDate": study.strftime("%Y%m%d"),
        "StudyTime": f"{hh:02d}{mm:02d}{ss:02d}",
        "StudyID": str(int(rng.integers(1000, 99999))),
        "StudyDescription": "CCTA",
        "SeriesDescription": "CCTA 75% BestDiast",
        "BodyPartExamined": "HEART",
        "KVP": str(spec.scanner.kv),
        "SliceThickness": f"{spec.scanner.thickness_mm:.3f}".rstrip("0").rstrip("."),
        "ConvolutionKernel": _pick(rng, kernels),
        "Manufacturer": vendor,
        "ManufacturerModelName": _pick(rng, models),
        "ReconstructionDiameter": f"{512 * spec.scanner.pixel_mm:.1f}",
    }
