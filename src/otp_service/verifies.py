"""Why a verify failed, as the admin stats count it (CONTRACT §3). A module of its own, importing
nothing: otp names the reason of each refusal, delivery counts them, the admin API lists them."""

from enum import StrEnum


class VerifyFailure(StrEnum):
    """One per refused verify (a request refused by its rate, or malformed, is no verify)."""

    WRONG_CODE = "wrong_code"  # invalid_code: not the code, nor the one it replaced
    EXPIRED = "expired"  # code_expired: none live (never sent, expired, used, or burnt)
    MAX_ATTEMPTS = "max_attempts"  # max_attempts_reached: this wrong code used the last attempt
    SUPERSEDED = "superseded"
    """A wrong code that was the address's previous code, replaced by a newer send while it was
    still live (the person typed the code of the earlier email): whichever of invalid_code or
    max_attempts_reached it was answered, it is counted here, as the cause."""
