"""The throwaway-mail families the product's trust page names, each with its common domains.

They are refused on top of the maintained list (disposable-email-domains), which misses some of
them (tempmail.com, temp-mail.io, 10minutemail.org, several of yopmail's alternate domains when
this was written); a test names every domain here.
"""

FAMILIES: dict[str, tuple[str, ...]] = {
    "mailinator": (
        "mailinator.com", "mailinator.net", "mailinator.org", "mailinator2.com", "notmailinator.com",
    ),
    "guerrillamail": (
        "guerrillamail.com", "guerrillamail.net", "guerrillamail.org", "guerrillamail.biz",
        "guerrillamail.de", "guerrillamail.info", "guerrillamailblock.com", "sharklasers.com",
        "grr.la", "pokemail.net", "spam4.me",
    ),
    "10minutemail": (
        "10minutemail.com", "10minutemail.net", "10minutemail.org", "10minutemail.co.uk",
        "10minutemail.de", "10minemail.com",
    ),
    "tempmail": (
        "tempmail.com", "temp-mail.org", "temp-mail.io", "temp-mail.com", "temp-mail.ru",
        "tempmail.net", "tempmail.io", "tempmail.plus", "tempmailo.com", "tempail.com",
    ),
    "yopmail": (
        "yopmail.com", "yopmail.net", "yopmail.fr", "cool.fr.nf", "jetable.fr.nf", "nospam.ze.tc",
        "nomail.xl.cx", "mega.zik.dj", "speed.1s.fr", "courriel.fr.nf", "moncourrier.fr.nf",
        "monemail.fr.nf", "monmail.fr.nf",
    ),
}  # fmt: skip

DOMAINS = frozenset(domain for domains in FAMILIES.values() for domain in domains)
