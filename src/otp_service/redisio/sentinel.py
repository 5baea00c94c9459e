"""Redis Sentinel (OTP_REDIS_SENTINELS, OTP_REDIS_SENTINEL_MASTER): which server is the primary now.

As the Redis documentation's client guidelines ("Sentinel clients") have it: the sentinels are
asked in turn, `SENTINEL get-master-addr-by-name`, the first that answers moves to the front of
the list; the server it names is asked `ROLE` on connecting and refused unless it says `master`
(a sentinel may not have seen the failover yet). PipelinedRedis asks again whenever it connects:
after a lost connection (the primary died), and after a READONLY reply (the primary it was talking
to was demoted and is a replica now). So the service follows a failover by itself and never
writes to a replica.

The sentinels are reached over plain TCP without a password; the data servers with OTP_REDIS_URL's
scheme, password and database.
"""

import asyncio
import contextlib
from typing import Any

import hiredis

from otp_service.redisio.client import text


class NoPrimary(ConnectionError):
    """No sentinel named a primary, or the one named is not (yet) one."""


class Sentinels:
    def __init__(self, addresses: list[tuple[str, int]], master: str, *, timeout: float) -> None:
        if not addresses:
            raise ValueError("at least one sentinel")
        self._addresses = list(addresses)
        self.master = master
        self._timeout = timeout

    async def primary(self) -> tuple[str, int]:
        """The primary's address, as the first sentinel that knows it says."""
        for address in list(self._addresses):
            try:
                async with asyncio.timeout(self._timeout):
                    reply = await _ask(address, ("SENTINEL", "get-master-addr-by-name", self.master))
            except (OSError, TimeoutError, hiredis.ProtocolError):
                continue
            if not isinstance(reply, list) or len(reply) != 2:
                continue  # this sentinel does not know the master (or answered an error)
            self._addresses.remove(address)
            self._addresses.insert(0, address)
            return text(reply[0]), int(reply[1])
        raise NoPrimary("no sentinel named the primary")


async def _ask(address: tuple[str, int], command: tuple[str, ...]) -> Any:
    """One command on a connection of its own (a sentinel is asked rarely: on connecting)."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(hiredis.pack_command(command))  # type: ignore[arg-type]  # the stub allows one element
        parser = hiredis.Reader()
        while True:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("the sentinel closed the connection")
            parser.feed(data)
            reply = parser.gets()
            if reply is not False:
                return reply
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def is_primary(role_reply: Any) -> bool:
    """ROLE's reply names a primary ("master", then its offset and replicas)."""
    return isinstance(role_reply, list) and bool(role_reply) and role_reply[0] == b"master"
