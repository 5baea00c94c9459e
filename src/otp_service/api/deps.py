"""Annotated dependency aliases: each route gets the one domain object it needs.

The objects are built once by the lifespan (assembly.py) and handed to every request as
Starlette's lifespan state (`request.state`). All dependencies are `async def` functions of the
request alone: FastAPI runs a plain `def` dependency in the threadpool, and the hot routes
(api/routing.FastRoute) call them directly.
"""

from typing import Annotated

from fastapi import Depends, Request

from otp_service.api.context import CLIENT_KEY, Client
from otp_service.assembly import Readiness
from otp_service.delivery.heartbeat import WorkerRegistry
from otp_service.delivery.queue import JobQueue
from otp_service.delivery.reputation import ReputationGuard
from otp_service.delivery.usage import UsageService
from otp_service.otp.service import OtpService
from otp_service.otp.store import CodeStore
from otp_service.otp.tokens import TokenIssuer
from otp_service.suppression.service import SuppressionService
from otp_service.webhooks.service import WebhookService


async def get_client(request: Request) -> Client:
    client: Client = request.scope[CLIENT_KEY]
    return client


async def get_otp_service(request: Request) -> OtpService:
    service: OtpService = request.state.otp
    return service


async def get_suppression_service(request: Request) -> SuppressionService:
    service: SuppressionService = request.state.suppressions
    return service


async def get_webhook_service(request: Request) -> WebhookService:
    service: WebhookService = request.state.webhooks
    return service


async def get_usage_service(request: Request) -> UsageService:
    service: UsageService = request.state.usage
    return service


async def get_reputation_guard(request: Request) -> ReputationGuard:
    guard: ReputationGuard = request.state.reputation
    return guard


async def get_tokens(request: Request) -> TokenIssuer | None:
    tokens: TokenIssuer | None = request.state.tokens
    return tokens


async def get_readiness(request: Request) -> Readiness:
    readiness: Readiness = request.state.readiness
    return readiness


async def get_queue(request: Request) -> JobQueue:
    queue: JobQueue = request.state.queue
    return queue


async def get_code_store(request: Request) -> CodeStore:
    codes: CodeStore = request.state.codes
    return codes


async def get_worker_registry(request: Request) -> WorkerRegistry:
    workers: WorkerRegistry = request.state.workers
    return workers


ClientDep = Annotated[Client, Depends(get_client)]
OtpServiceDep = Annotated[OtpService, Depends(get_otp_service)]
SuppressionServiceDep = Annotated[SuppressionService, Depends(get_suppression_service)]
WebhookServiceDep = Annotated[WebhookService, Depends(get_webhook_service)]
UsageServiceDep = Annotated[UsageService, Depends(get_usage_service)]
ReputationDep = Annotated[ReputationGuard, Depends(get_reputation_guard)]
TokensDep = Annotated[TokenIssuer | None, Depends(get_tokens)]
ReadinessDep = Annotated[Readiness, Depends(get_readiness)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
CodeStoreDep = Annotated[CodeStore, Depends(get_code_store)]
WorkerRegistryDep = Annotated[WorkerRegistry, Depends(get_worker_registry)]
