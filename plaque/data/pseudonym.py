"""Keyed pseudonyms for patients: HMAC-SHA256 of the DICOM PatientID.

The key comes from the environment variable ``PLAQUE_PSEUDONYM_KEY`` when set, else from
``preprocess.pseudonym_salt`` in params (public, so only suitable for synthetic data).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os

KEY_ENV = "PLAQUE_PSEUDONYM_KEY"
PREFIX = "P"
HEX_CHARS = 10

log = logging.getLogger(__name__)


def pseudonym(patient_id: str, key: str) -> str:
    """``"P"`` + the first 10 hex characters of HMAC-SHA256(key, patient_id): stable, key-dependent."""
    digest = hmac.new(key.encode("utf-8"), patient_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return PREFIX + digest[:HEX_CHARS]


def pseudonym_key(salt: str) -> tuple[str, str]:
    """The pseudonym key and its source: ``(key, "env")`` or ``(salt, "params")`` with a warning."""
    key = os.environ.get(KEY_ENV)
    if key:
        return key, "env"
    log.warning(
        "%s is not set: pseudonyms are keyed with preprocess.pseudonym_salt from params; "
        "set the variable to a secret for real patient data",
        KEY_ENV,
    )
    return salt, "params"
