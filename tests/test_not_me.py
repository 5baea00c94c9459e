"""The "Didn't ask for this?" link (CONTRACT §2 OTP_PUBLIC_URL / OTP_NOT_ME_HOURS, §4): in both
parts of every email in every locale, its token sealed under a purpose of its own, naming the
send; the page the service serves (a strict CSP, nothing reported on load); and the report's
effects, each on Redis and on the embedded default where the rule lives in Lua."""

import base64
import html
import re
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag

from otp_service.delivery.jobs import JobContent, JobSealer
from otp_service.delivery.not_me import TOKEN_MS, InvalidNotMeToken, NotMeLinks, NotMeSealer, NotMeToken
from otp_service.delivery.sender import Deliverer, Wording
from otp_service.sealing import Sealer
from otp_service.settings import SettingsError, load_settings
from tests.support import embedded_send_rate

PUBLIC = "https://otp.example"
LINK = re.compile(r"https://otp\.example/not-me#t=([A-Za-z0-9_-]+)")
SECRET = b"s" * 32


def deliverer(**overrides: Any) -> Deliverer:
    settings = load_settings(public_url=PUBLIC, **overrides)
    return Deliverer(settings=settings, primary=None, fallback=None, send_rate=embedded_send_rate(14))  # type: ignore[arg-type]


def links(clock: float = 1_000.0) -> NotMeLinks:
    return NotMeLinks(NotMeSealer(Sealer(SECRET)), PUBLIC, clock=lambda: clock)


@pytest.mark.parametrize("locale", ["en", "zh-CN", "bilingual"])
@pytest.mark.parametrize("repeated", [False, True], ids=["fresh", "re-sent"])
def test_the_link_is_in_both_parts_in_every_locale(locale: Any, repeated: bool) -> None:
    wording = Wording(locale=locale, lifetime_seconds=200 if repeated else None, repeated=repeated)
    link = links().link("1-0", "ann@example.org", "203.0.113.7", "203.0.113.0/24")
    email = deliverer(not_me_hours=36).build("email_otp", "ann@example.org", "012345", "k", wording, link)
    english, chinese = locale in ("en", "bilingual"), locale in ("zh-CN", "bilingual")
    assert email.text.count(link) == english + chinese
    assert email.html.count(f'href="{html.escape(link)}"') == english + chinese
    assert ("Didn't ask for this?" in email.text) is english
    assert ("不是您本人申请的？" in email.text) is chinese
    assert ("for 36 hours" in email.text) is english
    assert ("36 小时" in email.html) is chinese
    # Each email's own token: a second send's link is another.
    other = links().link("2-0", "ann@example.org", None, None)
    again = deliverer().build("email_otp", "ann@example.org", "012345", "k", wording, other)
    assert other in again.text
    assert link not in again.text + again.html


def test_without_a_public_url_no_email_carries_the_link() -> None:
    plain = Deliverer(settings=load_settings(), primary=None, fallback=None, send_rate=embedded_send_rate(14))  # type: ignore[arg-type]
    email = plain.build("email_otp", "ann@example.org", "012345", "k")
    assert "not-me" not in email.text + email.html
    assert "Didn't ask" not in email.text


def test_the_token_names_the_send_and_expires_after_seven_days() -> None:
    link = links(clock=1_000.0).link("1700000000000-0", "ann@example.org", "203.0.113.7", "203.0.113.0/24")
    [token] = LINK.findall(link)
    opened = NotMeSealer(Sealer(SECRET)).open(token)
    assert opened == NotMeToken("1700000000000-0", "ann@example.org", "203.0.113.7", "203.0.113.0/24",
                                1_000_000 + TOKEN_MS)  # fmt: skip
    assert TOKEN_MS == 7 * 86_400_000


def test_the_token_opens_under_its_own_purpose_only() -> None:
    sealer = Sealer(SECRET)
    [token] = LINK.findall(links().link("1-0", "ann@example.org", None, None))
    # A token is no job, and a job is no token (sealing.py: the purpose is the AEAD's data).
    raw = base64.b64encode(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    with pytest.raises(InvalidTag):
        JobSealer(sealer).open(raw)
    job = JobSealer(sealer).seal(JobContent("ann@example.org", "012345", "a", "h"))
    job_as_token = base64.urlsafe_b64encode(base64.b64decode(job)).decode().rstrip("=")
    for bad in (job_as_token, token[:-2], token + "AA", "", "x" * 5000, "not a token", "ü"):
        with pytest.raises(InvalidNotMeToken):
            NotMeSealer(sealer).open(bad)
    with pytest.raises(InvalidNotMeToken):  # another OTP_SECRET_KEY
        NotMeSealer(Sealer(b"t" * 32)).open(token)


@pytest.mark.parametrize("url", ["http://otp.example", "https://", "otp.example", "https://otp.example/?a=1",
                                 "https://u:p@ss@otp.example"])  # fmt: skip
def test_a_public_url_that_is_not_an_https_base_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(public_url=url)
    assert "OTP_PUBLIC_URL" in str(refused.value)
    assert url not in str(refused.value)


def test_the_public_url_and_hours_are_read() -> None:
    s = load_settings(public_url="https://otp.example/base/", not_me_hours=48)
    assert (s.public_url, s.not_me_hours) == ("https://otp.example/base", 48)
    assert (load_settings().public_url, load_settings().not_me_hours) == (None, 24)
    with pytest.raises(SettingsError, match="OTP_NOT_ME_HOURS"):
        load_settings(not_me_hours=0)
