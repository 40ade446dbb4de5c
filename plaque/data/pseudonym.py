"""Keyed pseudonyms for patients: HMAC-SHA256 of the DICOM PatientID, and names for their scans.

The key comes from the environment variable ``PLAQUE_PSEUDONYM_KEY``. For the phantom cohort it may be
unset, and ``preprocess.pseudonym_salt`` from params (public) is used; for any other data it is required.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections import Counter

from plaque.errors import InputError

KEY_ENV = "PLAQUE_PSEUDONYM_KEY"
PREFIX = "P"
HEX_CHARS = 10

log = logging.getLogger(__name__)


def pseudonym(patient_id: str, key: str) -> str:
    """``"P"`` + the first 10 hex characters of HMAC-SHA256(key, patient_id): stable, key-dependent."""
    digest = hmac.new(key.encode("utf-8"), patient_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return PREFIX + digest[:HEX_CHARS]


def pseudonym_key(salt: str, phantom: bool) -> tuple[str, str]:
    """The pseudonym key and its source: ``(key, "env")``, or for the ``phantom`` cohort without the
    variable ``(salt, "params")`` with a warning.

    Raises:
        InputError: the variable is unset and the data is not the phantom's.
    """
    key = os.environ.get(KEY_ENV)
    if key:
        return key, "env"
    if not phantom:
        raise InputError(
            KEY_ENV,
            "is not set: real patient data needs a secret pseudonym key; "
            f"export {KEY_ENV}=<a long random secret> and keep it private",
        )
    log.warning("%s is not set: the phantom's pseudonyms are keyed with preprocess.pseudonym_salt from params", KEY_ENV)
    return salt, "params"


def scan_names(subjects: list[str], dates: list[str]) -> list[str]:
    """A distinct name per scan: its subject's pseudonym, suffixed ``-1``, ``-2``, ... by study date
    (DICOM YYYYMMDD; ties and missing dates keep the given order) where a subject has several scans.

    Args:
        subjects: ``(S,)`` each scan's subject pseudonym; dates: ``(S,)`` each scan's StudyDate.
    """
    counts = Counter(subjects)
    order = sorted(range(len(subjects)), key=lambda i: (dates[i] or "99999999", i))
    seen: Counter[str] = Counter()
    names = list(subjects)
    for i in order:
        if counts[subjects[i]] > 1:
            seen[subjects[i]] += 1
            names[i] = f"{subjects[i]}-{seen[subjects[i]]}"
    return names
