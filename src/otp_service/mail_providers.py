"""The popular mailbox providers: the typo correction's targets (validation/typos.py), the
domains whose users are unrelated people by default (OTP_SHARED_MAIL_DOMAINS, CONTRACT §6) and
the domains the deliverability check never looks up. A module of its own, importing nothing,
because the settings check test recipients against it and validation reads the settings."""

# Popular mailbox providers worldwide (consumer webmail and large ISPs). Sources: public
# market-share lists of webmail providers, and the domains Mailcheck.js and email-misspelled
# ship with, extended with the main Chinese, Russian, Korean and European providers.
POPULAR_PROVIDERS: tuple[str, ...] = (
    # Google, Microsoft, Yahoo, Apple, AOL
    "gmail.com", "googlemail.com",
    "outlook.com", "hotmail.com", "live.com", "msn.com", "passport.com",
    "hotmail.co.uk", "hotmail.fr", "hotmail.de", "hotmail.it", "hotmail.es", "hotmail.nl",
    "live.co.uk", "live.fr", "live.de", "live.it", "live.nl", "live.cn", "live.ca",
    "outlook.fr", "outlook.de", "outlook.es", "outlook.it", "outlook.jp", "outlook.co.uk",
    "yahoo.com", "yahoo.co.uk", "yahoo.co.jp", "yahoo.fr", "yahoo.de", "yahoo.it", "yahoo.es",
    "yahoo.ca", "yahoo.com.au", "yahoo.com.br", "yahoo.co.in", "yahoo.com.tw", "yahoo.com.hk",
    "yahoo.com.sg", "yahoo.com.mx", "yahoo.com.ar", "ymail.com", "rocketmail.com",
    "icloud.com", "me.com", "mac.com", "aol.com", "aim.com",
    # China
    "qq.com", "vip.qq.com", "foxmail.com", "163.com", "vip.163.com", "126.com", "vip.126.com",
    "yeah.net", "188.com", "sina.com", "sina.cn", "vip.sina.com", "sohu.com", "139.com",
    "189.cn", "wo.cn", "aliyun.com", "tom.com", "21cn.com",
    # Privacy and independent providers
    "proton.me", "protonmail.com", "protonmail.ch", "pm.me", "tutanota.com", "tuta.io",
    "fastmail.com", "fastmail.fm", "zoho.com", "zohomail.com", "hey.com", "hushmail.com",
    "mail.com", "email.com", "gmx.com", "gmx.de", "gmx.net", "gmx.at", "gmx.ch", "web.de",
    # Russia and CIS
    "yandex.ru", "yandex.com", "ya.ru", "mail.ru", "bk.ru", "list.ru", "inbox.ru",
    "rambler.ru", "ukr.net",
    # Korea, Japan, India
    "naver.com", "daum.net", "hanmail.net", "nate.com", "docomo.ne.jp", "ezweb.ne.jp",
    "rediffmail.com",
    # Europe
    "t-online.de", "freenet.de", "orange.fr", "wanadoo.fr", "free.fr", "laposte.net", "sfr.fr",
    "libero.it", "virgilio.it", "alice.it", "tiscali.it", "seznam.cz", "wp.pl", "o2.pl",
    "interia.pl", "onet.pl", "btinternet.com", "sky.com", "virginmedia.com", "talktalk.net",
    "ntlworld.com", "telenet.be", "skynet.be", "ziggo.nl", "kpnmail.nl", "bluewin.ch",
    # Americas and Oceania
    "comcast.net", "att.net", "sbcglobal.net", "verizon.net", "cox.net", "charter.net",
    "earthlink.net", "juno.com", "shaw.ca", "rogers.com", "sympatico.ca", "bell.net",
    "bigpond.com", "optusnet.com.au", "xtra.co.nz", "uol.com.br", "bol.com.br",
    "terra.com.br", "ig.com.br", "prodigy.net.mx",
)  # fmt: skip
