"""The operator's "Trust & email sending practices" page (CONTRACT §5), rendered from the
effective settings: `otp-service trust-page [--format markdown|html]`."""
