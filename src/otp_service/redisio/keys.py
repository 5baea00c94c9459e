class RedisKeys:
    """Every Redis key the service uses, built in one place.

    All keys carry the hash tag `{<prefix>}`: one slot, so each Lua script (which touches the
    client, address, global and queue keys at once) runs unchanged on Redis Cluster.
    """

    def __init__(self, prefix: str) -> None:
        self._base = f"{prefix}:{{{prefix}}}"

    def throttle(self, scope: str, client: str) -> str:
        return f"{self._base}:ip:{scope}:{client}"

    def conversion(self, subnet: str) -> str:
        """Hash: a subnet's accepted sends and verified codes per hour (the low-conversion guard)."""
        return f"{self._base}:conv:{subnet}"

    def slowed(self, subnet: str) -> str:
        """String with a TTL: the guard has logged this subnet as slowed in its window."""
        return f"{self._base}:slowed:{subnet}"

    def cooldown(self, address_id: str) -> str:
        return f"{self._base}:cooldown:{address_id}"

    def daily(self, address_id: str) -> str:
        return f"{self._base}:daily:{address_id}"

    def remembered_cooldown(self, address_id: str) -> str:
        """The cooldown the address's remembered sources share, apart from everyone else's."""
        return f"{self._base}:cooldown:{address_id}:remembered"

    def remembered_daily(self, address_id: str) -> str:
        """Sorted set: the address's sends from its remembered sources (rolling 24 h)."""
        return f"{self._base}:daily:{address_id}:remembered"

    def domain(self, domain_id: str) -> str:
        """Sorted set: a recipient's registrable domain's accepted sends (rolling 24 h)."""
        return f"{self._base}:domain:{domain_id}"

    def global_sends(self, channel: str) -> str:
        return f"{self._base}:global:{channel}"

    def code(self, address_id: str) -> str:
        return f"{self._base}:code:{address_id}"

    def reported(self, address_id: str) -> str:
        """String with a TTL (OTP_NOT_ME_HOURS): the exact address was reported "not me"; until it
        lapses only its remembered sources' sends are emailed (CONTRACT §4)."""
        return f"{self._base}:reported:{address_id}"

    def idempotency(self, key_id: str) -> str:
        """Hash with a TTL: a send's Idempotency-Key, its body's fingerprint and first answer."""
        return f"{self._base}:idem:{key_id}"

    def send(self, send_id: str) -> str:
        """Hash with a TTL (the code's lifetime plus an hour): one send's status for
        GET /api/v1/auth/otp/sends/{send_id}, s = status, t = when it last changed (ms); with
        tracing on, c = the trace context of the provider call that sent it (otp_service/tracing)."""
        return f"{self._base}:send:{send_id}"

    def sent_message(self, provider: str, message_id: str) -> str:
        """String with the send's TTL: the send_id of the email a provider took under this
        message id, for the provider's events about it (webhooks/service.py)."""
        return f"{self._base}:message:{provider}:{message_id}"

    def worker(self, name: str) -> str:
        """String with a TTL: a delivery worker's heartbeat."""
        return f"{self._base}:worker:{name}"

    @property
    def workers(self) -> str:
        """Sorted set: worker name -> ms its heartbeat lapses (to count them without SCAN)."""
        return f"{self._base}:workers"

    @property
    def jobs(self) -> str:
        return f"{self._base}:jobs"

    @property
    def events(self) -> str:
        """Stream: events out waiting for their first attempt (events/outbox.py)."""
        return f"{self._base}:events"

    @property
    def events_retry(self) -> str:
        """Sorted set: events out waiting for another attempt, by due time (ms)."""
        return f"{self._base}:events-retry"

    @property
    def pauses(self) -> str:
        """Hash: provider -> reason, for providers the reputation guard paused."""
        return f"{self._base}:paused"

    @property
    def paused_at(self) -> str:
        """Hash: provider -> ms when the guard paused it (its cool-off counts from there)."""
        return f"{self._base}:paused-at"

    def remembered(self, source_id: str) -> str:
        """String with a TTL: a (mailbox, subnet) source that verified a code (CONTRACT §6)."""
        return f"{self._base}:remembered:{source_id}"

    def remembered_sources(self, address_id: str) -> str:
        """The address's remembered sources (zset: source id -> remembered until, ms)."""
        return f"{self._base}:remembered-sources:{address_id}"

    @property
    def unused(self) -> str:
        """A key nothing writes, so it always reads empty: a script's key that does not apply to
        the question asked (no client, no address, no Idempotency-Key, no recipient domain)."""
        return f"{self._base}:unused"

    def source_blocked(self, subnet: str) -> str:
        """String with a 24 h TTL: the reputation guard blocked this subnet from sending."""
        return f"{self._base}:source-blocked:{subnet}"

    def test_guesses(self, entry_id: str) -> str:
        """String with a TTL: wrong guesses at a test recipient's fixed code, across every address
        it serves (the code's lifetime from the first)."""
        return f"{self._base}:test-guesses:{entry_id}"

    def client_blocked(self, client: str) -> str:
        """String with a 24 h TTL: the reputation guard blocked this client (§2a) from sending."""
        return f"{self._base}:client-blocked:{client}"

    @property
    def resumed(self) -> str:
        """Hash: provider -> ms when an operator last resumed it."""
        return f"{self._base}:resumed"

    @property
    def sending_paused(self) -> str:
        """Set while no healthy provider is left: new sends answer 503 sending_paused."""
        return f"{self._base}:sending-paused"

    @property
    def retention_slot(self) -> str:
        """String with a one-hour TTL: a worker claimed this hour's retention run."""
        return f"{self._base}:retention-slot"

    @property
    def send_bucket(self) -> str:
        return f"{self._base}:send-bucket"

    @property
    def blocks(self) -> str:
        """Hash: source CIDR -> its block (JSON, delivery/reputation.py): the reputation guard's
        blocks, listed without a SCAN; an entry outlives its block by at most a check."""
        return f"{self._base}:blocks"

    @property
    def blocks_lifted(self) -> str:
        """Hash: source CIDR -> ms an operator lifted its block (kept 24 h): the guard counts
        only the source's events after it."""
        return f"{self._base}:blocks-lifted"
