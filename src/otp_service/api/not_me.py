"""The "Didn't ask for this?" link (CONTRACT §4): the page every email links to, `GET /not-me#t=<token>`,
and the report it posts, `POST /api/v1/auth/otp/not-me`.

The page reports nothing by being opened: link scanners open links in a headless browser and run
their scripts (Microsoft Defender does), so its script only reads the token from the fragment and
shows a button; the report is posted when the button is pressed. It loads nothing from anywhere:
its one style and one script are inline, allowed by their hashes under a Content-Security-Policy
that allows nothing else (no other script, no frame, no form, no base, connections to this origin
only), computed once here.
"""

import base64
import hashlib
import re

from fastapi import APIRouter, Response, status
from fastapi.responses import HTMLResponse

from otp_service.api.deps import NotMeDep
from otp_service.api.routing import LimitedRoute
from otp_service.api.schemas import NotMeIn, problem_responses

_STYLE = """
body{margin:0;background:#f4f5f7;font:15px/1.5 -apple-system,'Segoe UI',Helvetica,Arial,'PingFang SC',
'Microsoft YaHei',sans-serif;color:#1f2328}
main{max-width:480px;margin:40px auto;background:#fff;border-radius:8px;padding:32px}
h1{font-size:20px;margin:0 0 16px}p{margin:0 0 12px}
button{font:inherit;font-weight:600;padding:10px 18px;border:0;border-radius:6px;background:#cf222e;
color:#fff;cursor:pointer}
button[disabled]{opacity:.5;cursor:default}#status{margin-top:16px;font-weight:600}
"""

_SCRIPT = """
(function () {
  var token = new URLSearchParams(location.hash.slice(1)).get('t');
  var go = document.getElementById('go'), status = document.getElementById('status');
  if (!token) { status.textContent = 'This link is incomplete. / 此链接不完整。'; return; }
  go.hidden = false;
  go.addEventListener('click', function () {
    go.disabled = true;
    status.textContent = '…';
    fetch('api/v1/auth/otp/not-me', {method: 'POST', headers: {'content-type': 'application/json'},
                                     body: JSON.stringify({token: token}), credentials: 'omit'})
      .then(function (res) {
        if (res.status === 204) {
          status.textContent = 'Thank you: reported. / 谢谢，已报告。';
        } else if (res.status === 400) {
          status.textContent = 'This link is no longer valid. / 此链接已失效。';
        } else {
          go.disabled = false;
          status.textContent = 'Something went wrong; please try again later. / 出错了，请稍后再试。';
        }
      }, function () {
        go.disabled = false;
        status.textContent = 'Something went wrong; please try again later. / 出错了，请稍后再试。';
      });
  });
})();
"""

_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Didn't ask for this? / 不是您本人申请的？</title>
<style>{_STYLE}</style>
</head>
<body>
<main>
<h1>Didn't ask for this? / 不是您本人申请的？</h1>
<p>Someone entered your email address to receive a verification code. If it was not you, press the
button: for a while, codes will be sent to this address only where you signed in before.</p>
<p lang="zh-CN">有人输入了您的邮箱地址来获取验证码。如果不是您本人，请按下面的按钮：
在一段时间内，只有您曾登录过的地方才能向此地址发送验证码。</p>
<button id="go" type="button" hidden>It wasn't me / 不是我</button>
<p id="status" role="status"></p>
</main>
<script>{_SCRIPT}</script>
</body>
</html>
"""


def _sha256(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src {_sha256(_SCRIPT)}; style-src {_sha256(_STYLE)}; connect-src 'self'; "
    "img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
assert not re.search(r"\b(src|href)=", _PAGE), "the page loads nothing"


class NotMeRoute(LimitedRoute):
    max_body = 4096  # a token is ~300 characters


router = APIRouter(route_class=NotMeRoute, tags=["otp"])


@router.get("/not-me", response_class=HTMLResponse, include_in_schema=False)
async def not_me_page() -> HTMLResponse:
    return HTMLResponse(_PAGE, headers=_HEADERS)


@router.post(
    "/api/v1/auth/otp/not-me",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Report a code the address's owner did not ask for (\"Didn't ask for this?\")",
    description=(
        "Posted by the page of the email's \"Didn't ask for this?\" link with its token. For "
        "OTP_NOT_ME_HOURS the address then receives codes only from its remembered sources (others "
        "get the usual 202 and no email), the client that requested that send gets one reputation "
        "event, and `otp.reported` goes out. A token works once, for 7 days."
    ),
    responses=problem_responses(
        {400: ["invalid_token"], 413: ["payload_too_large"], 422: ["invalid_request"], 503: ["unavailable"]}
    ),
)
async def report_not_me(body: NotMeIn, not_me: NotMeDep) -> Response:
    await not_me.report(body.token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
