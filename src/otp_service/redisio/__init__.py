"""The service's Redis: the interface the stores use, its two transports, and what they share.

client.py      RedisClient (what the stores need), ReplyError, text()
pipelined.py   PipelinedRedis: a Redis server over TCP, TLS or a unix socket (production)
embedded.py    EmbeddedRedis: an in-memory Redis in this process (the embedded default)
cluster.py     Redis Cluster: key slots, the slot's owner, MOVED
sentinel.py    Sentinels: the primary Redis Sentinel names, found again after a failover
replication.py ReplicaWait: a write the service answers for, held by N replicas (WAIT)
scripts.py     Script: the Lua files, called by SHA
keys.py        RedisKeys: every key, built in one place
guard.py       redis_guard: Redis failures as 503
streams.py     ConsumerGroup: a Stream read through a consumer group (the job queue, events out)
"""

from otp_service.redisio.client import Arg, RedisClient, ReplyError, text
from otp_service.redisio.cluster import key_slot
from otp_service.redisio.embedded import EmbeddedRedis
from otp_service.redisio.guard import redis_guard
from otp_service.redisio.keys import RedisKeys
from otp_service.redisio.pipelined import PipelinedRedis, open_redis
from otp_service.redisio.replication import NotReplicated, ReplicaWait
from otp_service.redisio.scripts import Script, evalsha, positional
from otp_service.redisio.sentinel import Sentinels

__all__ = [
    "Arg",
    "EmbeddedRedis",
    "NotReplicated",
    "PipelinedRedis",
    "RedisClient",
    "RedisKeys",
    "ReplicaWait",
    "ReplyError",
    "Script",
    "Sentinels",
    "evalsha",
    "key_slot",
    "open_redis",
    "positional",
    "redis_guard",
    "text",
]
