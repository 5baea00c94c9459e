import pytest

from otp_service.errors import DisposableEmail, EmailTypo, InvalidEmail
from otp_service.mail_providers import POPULAR_PROVIDERS
from otp_service.validation.address import AddressValidator, normalize_email
from otp_service.validation.typos import typo_map


@pytest.fixture(scope="module")
def validator() -> AddressValidator:
    return AddressValidator(extra_disposable=["throwaway.example"], allow=["allowed-temp.example"])


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("gmial.com", "gmail.com"), ("gmai.com", "gmail.com"), ("gnail.com", "gmail.com"),
        ("gmail.co", "gmail.com"), ("gmail.con", "gmail.com"), ("gmail.cm", "gmail.com"),
        ("gamil.com", "gmail.com"), ("hotmial.com", "hotmail.com"), ("hotmail.con", "hotmail.com"),
        ("hotmal.com", "hotmail.com"), ("outlok.com", "outlook.com"), ("outlook.co", "outlook.com"),
        ("yahooo.com", "yahoo.com"), ("yaho.com", "yahoo.com"), ("icould.com", "icloud.com"),
        ("iclod.com", "icloud.com"), ("icloud.co", "icloud.com"), ("qq.con", "qq.com"),
        ("qq.co", "qq.com"), ("163.con", "163.com"), ("126.cm", "126.com"),
        ("foxmial.com", "foxmail.com"), ("sina.con", "sina.com"), ("protonmail.co", "protonmail.com"),
        ("protonmial.com", "protonmail.com"), ("yandex.ry", "yandex.ru"), ("gmx.con", "gmx.com"),
        ("googlemial.com", "googlemail.com"), ("hotmail.co.uj", "hotmail.co.uk"),
    ],
)  # fmt: skip
def test_typo_domains_get_a_suggestion(validator: AddressValidator, typed: str, meant: str) -> None:
    with pytest.raises(EmailTypo) as info:
        validator.check(f"Jane.Doe@{typed}")
    assert info.value.extra["suggestion"] == f"jane.doe@{meant}"


@pytest.mark.parametrize("domain", POPULAR_PROVIDERS)
def test_no_popular_provider_is_flagged(validator: AddressValidator, domain: str) -> None:
    assert validator.check(f"someone@{domain}") == f"someone@{domain}"


def test_typo_map_never_maps_a_provider_domain() -> None:
    mapping = typo_map()
    assert not set(POPULAR_PROVIDERS) & set(mapping)
    assert len(mapping) > 10_000


@pytest.mark.parametrize(
    "domain", ["example.com", "company.co", "mail.example.org", "gmail-fan.org", "acme.io", "q.com"]
)
def test_ordinary_domains_pass(validator: AddressValidator, domain: str) -> None:
    assert validator.check(f"a@{domain}") == f"a@{domain}"


@pytest.mark.parametrize(
    "domain",
    ["mailinator.com", "MX.Mailinator.com", "10minutemail.com", "guerrillamail.com", "throwaway.example"],
)
def test_throwaway_domains_and_their_subdomains_are_refused(validator: AddressValidator, domain: str) -> None:
    with pytest.raises(DisposableEmail):
        validator.check(f"a@{domain}")


THE_TRUST_PAGES_FAMILIES = {
    "mailinator": ["mailinator.com", "mailinator.net", "mailinator2.com", "notmailinator.com"],
    "guerrillamail": ["guerrillamail.com", "guerrillamail.net", "guerrillamail.org", "guerrillamailblock.com",
                      "sharklasers.com", "grr.la"],
    "10minutemail": ["10minutemail.com", "10minutemail.net", "10minutemail.org", "10minutemail.co.uk"],
    "tempmail": ["tempmail.com", "temp-mail.org", "temp-mail.io", "tempmail.net", "tempmail.io", "tempmail.plus"],
    "yopmail": ["yopmail.com", "yopmail.net", "yopmail.fr", "cool.fr.nf", "jetable.fr.nf", "nospam.ze.tc",
                "nomail.xl.cx", "mega.zik.dj", "speed.1s.fr"],
}  # fmt: skip


@pytest.mark.parametrize(
    ("family", "domain"), [(f, d) for f, domains in THE_TRUST_PAGES_FAMILIES.items() for d in domains]
)
def test_every_family_the_trust_page_names_is_refused(
    validator: AddressValidator, family: str, domain: str
) -> None:
    with pytest.raises(DisposableEmail):
        validator.check(f"someone@{domain}")
    with pytest.raises(DisposableEmail):
        validator.check(f"someone@inbox.{domain}")


def test_list_is_the_maintained_one(validator: AddressValidator) -> None:
    assert validator.disposable_count > 10_000


def test_operator_allow_list_wins() -> None:
    v = AddressValidator(extra_disposable=["temp.example"], allow=["temp.example"])
    assert v.check("a@temp.example") == "a@temp.example"


@pytest.mark.parametrize(
    "raw", ["", "plain", "a@", "@b.com", "a b@c.com", "a@b", "a@@b.com", "a@-b.com", "x" * 321 + "@a.com",
            '"quoted"@example.com', "a@[127.0.0.1]"],
)  # fmt: skip
def test_invalid_syntax_is_refused(validator: AddressValidator, raw: str) -> None:
    with pytest.raises(InvalidEmail):
        validator.check(raw)


def test_normalisation_lower_cases_and_idna() -> None:
    assert normalize_email("  John.Smith@Example.COM ") == "john.smith@example.com"
    assert normalize_email("user@BÜCHER.de") == "user@bücher.de"
    assert normalize_email(normalize_email("A@B.org")) == "a@b.org"
