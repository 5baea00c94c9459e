"""The sender check (CONTRACT §9, `otp-service doctor`): will mailbox providers accept mail from
OTP_EMAIL_FROM? Since 2024 Gmail and Yahoo, and since May 2025 Outlook.com, reject or junk mail
whose sender lacks SPF, DKIM or a DMARC record, or whose DKIM and SPF are not aligned with the From
domain; a sign-in code in the spam folder is a failed sign-in.

    identity.py   what a provider says about the From domain (its DKIM records, its envelope
                  domain's SPF, whether the identity is verified), asked through its API
    dns.py        the DNS reads, through OTP_DNS_NAMESERVERS, each bounded by OTP_DNS_TIMEOUT
    checks.py     one small function per check, each a pass or a fail with the record to publish
    doctor.py     all checks for every configured provider, and their text for the terminal
    periodic.py   the worker's loop: at start, then every 6 h, as otp_sender_check{check}
"""
