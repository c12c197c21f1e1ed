"""``POST /feedback``: true labels for logged predictions, by request id (and record
position), so performance can be monitored once labels arrive. A write: with credentials
configured it needs one with the ``feedback`` scope, whose name each label change records."""

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints

from mlcycle.features import Signature
from mlcycle.predlog import PredictionLogError
from mlcycle.serve.core import MAX_TEXT, SHOWN, Core
from mlcycle.serve.http import AUTH_ERRORS, ERRORS, ErrorDetail, authorized

logger = logging.getLogger("mlcycle.serve")


class FeedbackResponse(BaseModel):
    received: int = Field(description="labels in the request")
    matched: int = Field(description="logged records that hold the label sent")
    conflicts: int = Field(
        0,
        description="logged records that keep another label given earlier (send "
        '"overwrite": true to replace it)',
    )


def feedback_request(signature: Signature, max_records: int) -> type[BaseModel]:
    """The body of ``/feedback``: 1 to ``max_records`` labels, each a class of the model
    (classification) or a finite number (regression)."""
    classification = signature.is_classification

    class FeedbackItem(BaseModel):
        """The true label of one record (``row``) or of every record of a request."""

        model_config = ConfigDict(extra="forbid")
        request_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
        row: Annotated[int, Field(ge=0)] | None = Field(
            None, description="the record's position in its request; null: every record"
        )
        label: (
            Annotated[str, StringConstraints(max_length=MAX_TEXT)] | Annotated[int, Strict()]
            if classification
            else Annotated[float, Strict(), Field(allow_inf_nan=False)]
        ) = Field(description="the true class" if classification else "the true value")

    class FeedbackRequest(BaseModel):
        model_config = ConfigDict(
            extra="forbid",
            json_schema_extra={
                "examples": [
                    {
                        "labels": [
                            {
                                "request_id": "4f1c...",
                                "row": 0,
                                "label": signature.classes[0] if classification else 1.0,
                            }
                        ]
                    }
                ]
            },
        )
        labels: Annotated[list[FeedbackItem], Field(min_length=1, max_length=max_records)]
        overwrite: Annotated[bool, Strict()] = Field(
            False, description="replace labels given earlier (else they are kept: conflicts)"
        )

    return FeedbackRequest


def add_routes(routes: APIRouter, core: Core) -> None:
    """Add the feedback route over ``core``'s prediction log to ``routes`` (the app's
    router)."""
    sig = core.signature
    FeedbackRequest = feedback_request(sig, core.settings.max_records)
    documented = {
        **ERRORS,
        409: {
            "model": ErrorDetail,
            "description": "no prediction log, or every record matched holds another label",
        },
    }

    @routes.post(
        "/feedback",
        response_model=FeedbackResponse,
        responses={**documented, **AUTH_ERRORS} if core.credentials else documented,
    )
    async def feedback(
        request: FeedbackRequest,
        by: Annotated[str, Depends(authorized(core.credentials, "feedback"))],
    ) -> FeedbackResponse:
        """Attach true labels to logged predictions, by request id (and record position), for
        monitoring performance once labels arrive. A label for a record that was never logged
        matches nothing (``matched`` says how many did); a record labelled earlier keeps its
        label unless ``overwrite`` is true (``conflicts`` says how many did; when every record
        matched did, nothing changed and the answer is a 409). With credentials configured,
        needs ``Authorization: Bearer <token>`` of one with the ``feedback`` scope."""
        if core.log is None:
            raise HTTPException(
                409, "the prediction log is off (mlcycle serve --no-log): labels have no home"
            )
        classes = set(sig.classes)
        triples = []
        for i, item in enumerate(request.labels):
            label = item.label
            if sig.is_classification:
                label = str(label)
                if label not in classes:
                    raise HTTPException(
                        422,
                        f"labels.{i}.label: {label[:SHOWN]!r} is not a class of the model "
                        f"({sorted(classes)})",
                    )
            triples.append((item.request_id, item.row, label))
        try:
            attached = await asyncio.to_thread(
                core.log.attach_labels, triples, by=by, overwrite=request.overwrite
            )
        except PredictionLogError as exc:  # the database is down: the client may retry
            logger.warning("feedback: attaching labels failed: %s", exc)
            raise HTTPException(
                503,
                "the prediction log's database is not available; retry later",
                headers={"Retry-After": "5"},
            ) from None
        if attached.conflicts and not attached.matched:
            raise HTTPException(
                409,
                f"{attached.conflicts} logged record(s) hold another label given earlier; "
                'nothing was changed. Send "overwrite": true to replace them',
            )
        return FeedbackResponse(
            received=len(triples), matched=attached.matched, conflicts=attached.conflicts
        )
