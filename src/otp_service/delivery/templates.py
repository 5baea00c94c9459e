"""The only emails this service can send: a compile-time allowlist of template ids.

No caller passes a subject or a body; the context holds values the templates escape
(autoescape on for HTML). No tracking pixels, no remote images, no links but the website and
the support address.
"""

from dataclasses import dataclass
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

ALLOWED_TEMPLATES: frozenset[str] = frozenset({"email_otp"})


class UnknownTemplate(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


@cache
def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("otp_service.delivery", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def render_template(template_id: str, context: dict[str, Any]) -> RenderedEmail:
    if template_id not in ALLOWED_TEMPLATES:
        raise UnknownTemplate(f"template {template_id!r} is not in the allowlist")
    env = _environment()
    subject = env.get_template(f"{template_id}.subject.j2").render(context).strip()
    return RenderedEmail(
        subject=" ".join(subject.split()),
        text=env.get_template(f"{template_id}.txt.j2").render(context),
        html=env.get_template(f"{template_id}.html.j2").render(context),
    )
