"""Address checks that cost no network: syntax, throwaway domains, typo domains."""

from collections.abc import Iterable
from functools import lru_cache

import disposable_email_domains
from email_validator import EmailNotValidError, validate_email

from otp_service.errors import DisposableEmail, EmailTypo, InvalidEmail
from otp_service.validation.typos import POPULAR_PROVIDERS, typo_map

MAX_LENGTH = 320  # RFC 3696 errata 1690: 64 + 1 + 255


@lru_cache(maxsize=65536)
def normalize_email(raw: str) -> str:
    """Syntax check and normalisation (IDNA/Unicode NFC by email-validator), lower-cased."""
    if len(raw) > MAX_LENGTH:
        raise InvalidEmail("The address is too long")
    try:
        result = validate_email(raw.strip(), check_deliverability=False, allow_quoted_local=False)
    except EmailNotValidError as exc:
        raise InvalidEmail(str(exc)) from None
    return result.normalized.lower()


class AddressValidator:
    def __init__(self, *, extra_disposable: Iterable[str] = (), allow: Iterable[str] = ()) -> None:
        # A popular provider is never throwaway, whatever a list says (21cn.com is a Chinese
        # ISP's webmail, yet sits on the upstream list).
        listed = set(disposable_email_domains.blocklist) - set(POPULAR_PROVIDERS)
        self._disposable = frozenset((listed | set(extra_disposable)) - set(allow))
        self._typos = typo_map()

    def is_disposable(self, domain: str) -> bool:
        """The domain or any parent of it is listed (mx.mailinator.com counts)."""
        labels = domain.split(".")
        return any(".".join(labels[i:]) in self._disposable for i in range(len(labels) - 1))

    def check(self, raw: str) -> str:
        """The normalised address, or InvalidEmail / DisposableEmail / EmailTypo."""
        email = normalize_email(raw)
        local, _, domain = email.rpartition("@")
        # Typos first: many typo domains (gmial.com, hotmial.com) are registered as catch-alls
        # and sit on the throwaway list too, and "did you mean" is the answer that helps.
        suggestion = self._typos.get(domain)
        if suggestion is not None:
            raise EmailTypo(f"{local}@{suggestion}")
        if self.is_disposable(domain):
            raise DisposableEmail()
        return email
