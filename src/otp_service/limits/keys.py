"""Every Redis key the service uses, built in one place.

All keys carry the hash tag `{<prefix>}`: one slot, so each Lua script (which touches the
IP, address, global and queue keys at once) runs unchanged on Redis Cluster.
"""

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

RedisClient = Redis | RedisCluster
"""A standalone client or a cluster client: the scripts and commands are the same for both."""


class RedisKeys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._base = f"{prefix}:{{{prefix}}}"

    def throttle(self, scope: str, client_ip: str) -> str:
        return f"{self._base}:ip:{scope}:{client_ip}"

    def cooldown(self, address_id: str) -> str:
        return f"{self._base}:cooldown:{address_id}"

    def daily(self, address_id: str) -> str:
        return f"{self._base}:daily:{address_id}"

    def global_sends(self, channel: str) -> str:
        return f"{self._base}:global:{channel}"

    def code(self, address_id: str) -> str:
        return f"{self._base}:code:{address_id}"

    @property
    def jobs(self) -> str:
        return f"{self._base}:jobs"

    @property
    def pauses(self) -> str:
        """Hash: provider -> reason, for providers the reputation guard paused."""
        return f"{self._base}:paused"

    @property
    def resumed(self) -> str:
        """Hash: provider -> ms when an operator last resumed it."""
        return f"{self._base}:resumed"

    @property
    def sending_paused(self) -> str:
        """Set while no healthy provider is left: new sends answer 503 sending_paused."""
        return f"{self._base}:sending-paused"

    @property
    def send_bucket(self) -> str:
        return f"{self._base}:send-bucket"

    @property
    def pattern(self) -> str:
        return f"{self._base}:*"
