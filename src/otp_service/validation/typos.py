""" "Did you mean gmail.com?": curated typos plus a distance-1 rule, looked up in O(1).

The edit-distance rule only applies to provider names of five characters or more: for short
names (qq, 163, 126, gmx, ...) a single edit reaches real, unrelated domains (q.com, 123.com),
so those rely on the curated map and the TLD rule. Every provider domain is removed from the
candidate map, so a real provider address is never flagged.
"""

from collections.abc import Iterable
from functools import cache

from otp_service.mail_providers import POPULAR_PROVIDERS

# Misspellings seen in sign-up forms that the distance-1 rule cannot reach (two edits, or a
# short provider name). Sources: Mailcheck.js issue reports and common-typo lists.
CURATED_TYPOS: dict[str, str] = {
    "icould.com": "icloud.com", "iclould.com": "icloud.com", "icoud.com": "icloud.com",
    "gmaill.com": "gmail.com", "gmali.com": "gmail.com", "gamil.com": "gmail.com",
    "gmail.comm": "gmail.com", "gmail.c0m": "gmail.com", "g-mail.com": "gmail.com",
    "hotmai.com": "hotmail.com", "homail.com": "hotmail.com", "hotmial.com": "hotmail.com",
    "hotamil.com": "hotmail.com", "hotmaill.com": "hotmail.com", "hitmail.com": "hotmail.com",
    "outlok.com": "outlook.com", "outllok.com": "outlook.com", "outook.com": "outlook.com",
    "yahho.com": "yahoo.com", "yaoo.com": "yahoo.com", "yhoo.com": "yahoo.com",
    "qq.con": "qq.com", "qq.co": "qq.com", "qq.cm": "qq.com", "qq.om": "qq.com",
    "qq.comm": "qq.com", "qqq.com": "qq.com", "qq.vom": "qq.com",
    "163.con": "163.com", "163.co": "163.com", "163.cm": "163.com", "163.cn": "163.com",
    "126.con": "126.com", "126.co": "126.com", "126.cm": "126.com", "126.cn": "126.com",
    "sina.con": "sina.com", "sian.com": "sina.com", "sina.co": "sina.com",
    "foxmial.com": "foxmail.com", "foxmai.com": "foxmail.com", "fox.mail.com": "foxmail.com",
    "gmx.con": "gmx.com", "gmx.co": "gmx.com", "yandex.ry": "yandex.ru", "yandex.r": "yandex.ru",
    "yandeks.ru": "yandex.ru", "mail.r": "mail.ru", "mail.ry": "mail.ru",
    "protonmail.co": "protonmail.com", "protonmai.com": "protonmail.com",
    "proton.com": "proton.me", "protonmail.me": "proton.me",
    "aol.con": "aol.com", "aol.co": "aol.com", "me.con": "me.com",
}  # fmt: skip

# Misspelt endings of ".com" (and of ".net"), applied to any provider whose domain uses them.
TLD_TYPOS: dict[str, tuple[str, ...]] = {
    "com": ("con", "cm", "om", "co", "cim", "vom", "xom", "comm", "cpm", "coom", "ocm", "cmo",
            "c0m", "clm", "col", "cok"),
    "net": ("ner", "nte", "nt", "met", "bet", "ne", "nett"),
}  # fmt: skip

_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789.-"
MIN_NAME_FOR_DISTANCE = 5


def _distance_one(word: str) -> Iterable[str]:
    """Every string at optimal-string-alignment distance 1 (Norvig's edits1, with transposes)."""
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    for left, right in splits:
        if right:
            yield left + right[1:]
            for ch in _ALPHABET:
                if ch != right[0]:
                    yield left + ch + right[1:]
        if len(right) > 1:
            yield left + right[1] + right[0] + right[2:]
        for ch in _ALPHABET:
            yield left + ch + right


@cache
def typo_map(providers: tuple[str, ...] = POPULAR_PROVIDERS) -> dict[str, str]:
    """Candidate domain -> provider it most likely misspells. Built once per process (~50 ms)."""
    real = set(providers)
    mapping: dict[str, str] = {}
    # Lowest priority first; later assignments win.
    for domain in reversed(providers):
        name = domain.partition(".")[0]
        if len(name) >= MIN_NAME_FOR_DISTANCE:
            for variant in _distance_one(domain):
                if "." in variant and not variant.startswith(".") and not variant.endswith("."):
                    mapping[variant] = domain
    for domain in reversed(providers):
        stem, _, tld = domain.rpartition(".")
        for typo in TLD_TYPOS.get(tld, ()):
            mapping[f"{stem}.{typo}"] = domain
    mapping.update(CURATED_TYPOS)
    for domain in real:
        mapping.pop(domain, None)
    return mapping
