"""Sealed delivery jobs (delivery/jobs.py): AES-GCM under a key derived for this purpose alone."""

import base64

from otp_service.delivery.jobs import JobContent, JobSealer
from otp_service.sealing import Sealer

CONTENT = JobContent(email="a@example.org", code="123456", address_id="a", code_hash="h" * 64)


def test_every_job_has_its_own_random_nonce_whichever_process_seals_it() -> None:
    # Every process seals under the same key: nonces must not depend on a per-process counter.
    sealers = [JobSealer(Sealer(b"k" * 32)) for _ in range(4)]
    nonces = [base64.b64decode(s.seal(CONTENT))[:12] for s in sealers for _ in range(250)]
    assert len(set(nonces)) == len(nonces)
    assert len({n[:4] for n in nonces}) == len(nonces)  # no fixed prefix per process
    assert len({n[4:] for n in nonces}) == len(nonces)  # no counter shared across processes


def test_a_job_opens_under_any_process_with_the_same_key() -> None:
    sealed = JobSealer(Sealer(b"k" * 32)).seal(CONTENT)
    assert JobSealer(Sealer(b"k" * 32)).open(sealed) == CONTENT
