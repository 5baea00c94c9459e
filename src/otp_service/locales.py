"""The languages an email can be written in: read by the settings (OTP_DEFAULT_LOCALE), the API
(a send's `locale`), the sealed job and the templates, so it sits beneath all of them."""

from typing import Literal

Locale = Literal["en", "zh-CN", "bilingual"]
LOCALES: tuple[Locale, ...] = ("en", "zh-CN", "bilingual")
