"""Address checks that cost no network: syntax, throwaway domains, typo domains."""

import re
from collections.abc import Iterable
from functools import lru_cache

import disposable_email_domains
from email_validator import EmailNotValidError, validate_email

from otp_service.errors import DisposableEmail, EmailTypo, InvalidEmail
from otp_service.mail_providers import POPULAR_PROVIDERS
from otp_service.validation import families
from otp_service.validation.typos import typo_map

MAX_LENGTH = 320  # RFC 3696 errata 1690: 64 + 1 + 255


# RFC 5322 dot-atom in ASCII: what email-validator accepts as a local part without quoting,
# internationalisation or any rewriting.
_ASCII_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")
_MAX_LOCAL = 64
_MAX_ADDRESS = 254


def _validate(address: str) -> str:
    try:
        result = validate_email(address, check_deliverability=False, allow_quoted_local=False)
    except EmailNotValidError as exc:
        raise InvalidEmail(str(exc)) from None
    return str(result.normalized)


@lru_cache(maxsize=16384)
def _normalized_domain(domain: str) -> str | None:
    """email-validator's verdict on a domain alone (checked with a one-letter local part),
    cached: a service sees a few thousand domains and millions of addresses."""
    try:
        return _validate(f"a@{domain}").rpartition("@")[2]
    except InvalidEmail:
        return None


@lru_cache(maxsize=65536)
def normalize_email(raw: str) -> str:
    """Syntax check and normalisation (IDNA/Unicode NFC by email-validator), lower-cased.

    email-validator's cost is nearly all in the domain (IDNA, UTS-46 per character), and a few
    popular domains carry most addresses. The common address, a plain ASCII dot-atom before the
    @, has nothing in its local part to normalise, so it takes the domain's cached verdict;
    anything else, and every refusal (for its message), goes through email-validator whole. A
    property test holds the two ways to the same answer.
    """
    if len(raw) > MAX_LENGTH:
        raise InvalidEmail("The address is too long")
    address = raw.strip()
    local, at, domain = address.rpartition("@")
    if at and len(local) <= _MAX_LOCAL and _ASCII_DOT_ATOM.match(local):
        normalized_domain = _normalized_domain(domain)
        if normalized_domain is not None:
            email = f"{local}@{normalized_domain}"
            if len(email) <= _MAX_ADDRESS:
                return email.lower()
    return _validate(address).lower()


class AddressValidator:
    def __init__(self, *, extra_disposable: Iterable[str] = (), allow: Iterable[str] = ()) -> None:
        # A popular provider is never throwaway, whatever a list says (21cn.com is a Chinese
        # ISP's webmail, yet sits on the upstream list).
        listed = set(disposable_email_domains.blocklist) - set(POPULAR_PROVIDERS)
        listed |= families.DOMAINS  # the families the trust page names, whatever the list says
        self._disposable = frozenset((listed | set(extra_disposable)) - set(allow))
        self._typos = typo_map()

    @property
    def disposable_count(self) -> int:
        """How many throwaway domains are refused (the trust page states it)."""
        return len(self._disposable)

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
