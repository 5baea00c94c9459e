"""How long a suppressed send waits before it reads `sent` (CONTRACT §3: the send's status "tells
nothing that sending mail to that address would not tell anyone").

A complaint- or operator-suppressed address is never handed to a provider, yet its send must
read `sent`, as a send the provider took does, and when one does. What anyone holding a send_id
can measure is when `queued` became `sent`: polling GET /api/v1/auth/otp/sends/{send_id} shows
it to within the polling interval, whatever `updated_at` says (whole seconds). A real send turns
`sent` once the provider answers: its code check, a send-rate token, the provider's latency, any
retry and backoff. A suppressed send that turned at once would stand out from its first poll.

So the worker keeps how long its recent sends took, from the suppression look-up to the
provider's acceptance (the stretch a suppressed send skips), and a suppressed send waits one of
those durations, drawn at random: the same distribution as this worker's real sends, as far as
its recent ones tell, following the provider as it slows down or recovers. A fixed wait would
not do: a real send's time varies, and a constant shows itself over a few samples.

What it does not cover: before this worker has sent anything (just started), a suppressed send
waits a draw from FIRST_WAIT, an assumption, not a measurement; and a send a real provider
would have failed (every provider paused, the send rate exhausted until expiry) still reads
`sent` for a suppressed address.
"""

import random
from collections import deque

RECENT = 100
"""Durations kept: enough to stand for the spread of recent sends (a minute at a modest rate),
few enough to follow a provider's latency as it changes within minutes."""

FIRST_WAIT = (0.1, 0.6)
"""Seconds, before any send was measured: a guess at an HTTPS provider API's answer time (a
fraction of a second), not a measurement; replaced by real durations from the first send on."""


class SendPace:
    """The durations of a worker's recent sends, and a draw from them for a suppressed send."""

    def __init__(self, recent: int = RECENT) -> None:
        self._took: deque[float] = deque(maxlen=recent)
        self._random = random.SystemRandom()  # not guessable from earlier draws

    def took(self, seconds: float) -> None:
        """A send the provider took, `seconds` after its suppression look-up."""
        self._took.append(max(0.0, seconds))

    def draw(self) -> float:
        """Seconds a suppressed send waits: one of the recent sends' durations."""
        if not self._took:
            return self._random.uniform(*FIRST_WAIT)
        return self._random.choice(self._took)
