"""The stack's ceiling: a bare FastAPI endpoint taking the same JSON body and answering 202."""

from fastapi import FastAPI
from pydantic import BaseModel, Field

app = FastAPI()


class SendIn(BaseModel):
    email: str = Field(max_length=320)


@app.post("/api/v1/auth/otp/send", status_code=202)
async def send(body: SendIn) -> dict[str, object]:
    return {"status": "pending", "expires_in": 300, "resend_after": 60}
