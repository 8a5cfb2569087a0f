"""The review queue, a violation's evidence and registry match, the decision,
evidence images and notice timelines. Thin: selectors read, services write."""

from __future__ import annotations

import uuid

import structlog
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import FileResponse, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from cakra.backoffice.access import OfficerRequest, decider_required, officer_object_not_found, officer_required
from cakra.backoffice.decisions import violation_validate
from cakra.backoffice.forms import RejectForm
from cakra.backoffice.selectors import (
    QUEUE_PAGE_SIZE,
    evidence_derivative_for_officer,
    notice_detail_for_officer,
    review_counts_today,
    violation_detail_for_officer,
    violation_next_in_queue,
    violation_queue,
)
from cakra.backoffice.services import officer_can_decide
from cakra.backoffice.viewlog import Viewed, personal_data_view_record
from cakra.enforcement.errors import DomainError, NotFoundError
from cakra.enforcement.numbers import notice_number_display
from cakra.enforcement.services import violation_reject

logger = structlog.get_logger(__name__)


def _domain_error_text(exc: DomainError) -> str:
    """Officers read Indonesian: the known error kinds get a translated
    sentence; anything else shows the service's own message."""
    known = {
        "no_registry_match": _(
            "No vehicle in the registry matches this plate, so no notice can be issued. "
            "Reject the violation or wait for the registry to be updated."
        ),
        "invalid_state": _("This violation has already been decided."),
        "conflict": _("This violation was changed by someone else. Reload the page and try again."),
    }
    return known.get(exc.code, exc.message)


@require_GET
@officer_required
def queue_view(request: OfficerRequest) -> HttpResponse:
    officer = request.user
    page = Paginator(violation_queue(officer=officer), QUEUE_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "backoffice/queue.html",
        {"page": page, "waiting": page.paginator.count, "counts": review_counts_today(officer=officer)},
    )


def _render_detail(
    request: OfficerRequest, violation_id: uuid.UUID, *, reject_form: RejectForm | None = None, status: int = 200
) -> HttpResponse:
    officer = request.user
    try:
        detail = violation_detail_for_officer(officer=officer, violation_id=violation_id)
    except NotFoundError as exc:
        raise officer_object_not_found(request, object_type="violation", object_id=violation_id) from exc
    viewed = [Viewed.PLATE]
    if detail.registry_match is not None:
        viewed += [Viewed.OWNER_IDENTITY, Viewed.OWNER_NIK_MASKED, Viewed.OWNER_CONTACTS_MASKED]
    personal_data_view_record(
        officer=officer, object_type="violation", object_id=str(detail.violation.pk), viewed=viewed
    )
    return render(
        request,
        "backoffice/violation_detail.html",
        {
            "detail": detail,
            "can_decide": officer_can_decide(officer) and detail.violation.status == "received",
            "reject_form": reject_form or RejectForm(),
        },
        status=status,
    )


@require_GET
@officer_required
def violation_detail_view(request: OfficerRequest, violation_id: uuid.UUID) -> HttpResponse:
    return _render_detail(request, violation_id)


def _redirect_to_next(request: OfficerRequest) -> HttpResponse:
    following = violation_next_in_queue(officer=request.user)
    if following is None:
        return redirect("backoffice:queue")
    return redirect("backoffice:violation", violation_id=following.id)


@require_POST
@officer_required
@decider_required
def violation_validate_view(request: OfficerRequest, violation_id: uuid.UUID) -> HttpResponse:
    try:
        notice = violation_validate(officer=request.user, violation_id=violation_id)
    except NotFoundError as exc:
        raise officer_object_not_found(request, object_type="violation", object_id=violation_id) from exc
    except DomainError as exc:
        logger.info("backoffice.validate_refused", officer_id=request.user.pk, code=exc.code)
        messages.error(request, _domain_error_text(exc))
        return redirect("backoffice:violation", violation_id=violation_id)
    messages.success(
        request,
        _("Violation validated. Notice %(number)s was issued and is being sent.")
        % {"number": notice_number_display(notice.number)},
    )
    return _redirect_to_next(request)


@require_POST
@officer_required
@decider_required
def violation_reject_view(request: OfficerRequest, violation_id: uuid.UUID) -> HttpResponse:
    form = RejectForm(request.POST)
    if not form.is_valid():
        return _render_detail(request, violation_id, reject_form=form, status=400)
    try:
        violation_reject(officer=request.user, violation_id=violation_id, reason=form.cleaned_data["reason"])
    except NotFoundError as exc:
        raise officer_object_not_found(request, object_type="violation", object_id=violation_id) from exc
    except DomainError as exc:
        if exc.field == "reason":
            form.add_error("reason", exc.message)
            return _render_detail(request, violation_id, reject_form=form, status=400)
        logger.info("backoffice.reject_refused", officer_id=request.user.pk, code=exc.code)
        messages.error(request, _domain_error_text(exc))
        return redirect("backoffice:violation", violation_id=violation_id)
    messages.success(request, _("Violation rejected. No notice will be sent."))
    return _redirect_to_next(request)


@require_GET
@officer_required
def evidence_view(request: OfficerRequest, evidence_id: uuid.UUID) -> FileResponse:
    """The re-encoded, metadata-free derivative only; the original stays in
    custody. Unknown, another region's and not-yet-derived all 404."""
    try:
        evidence = evidence_derivative_for_officer(officer=request.user, evidence_id=evidence_id)
        handle = evidence.derivative.open("rb")
    except (NotFoundError, FileNotFoundError) as exc:
        raise officer_object_not_found(request, object_type="evidence", object_id=evidence_id) from exc
    personal_data_view_record(
        officer=request.user,
        object_type="evidence",
        object_id=str(evidence.pk),
        viewed=[Viewed.EVIDENCE_PHOTO],
        related={"violation_id": str(evidence.violation_id)},
    )
    response = FileResponse(handle, content_type="image/jpeg")
    # FileResponse would name the stored file; the path is nobody's business.
    response.headers["Content-Disposition"] = "inline"
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@require_GET
@officer_required
def notice_detail_view(request: OfficerRequest, number: str) -> HttpResponse:
    try:
        detail = notice_detail_for_officer(officer=request.user, number=number)
    except NotFoundError as exc:
        raise officer_object_not_found(request, object_type="notice", object_id=None) from exc
    personal_data_view_record(
        officer=request.user,
        object_type="notice",
        object_id=str(detail.notice.pk),
        viewed=[Viewed.PLATE, Viewed.DELIVERY_CONTACTS_MASKED],
        related={"violation_id": str(detail.notice.violation_id)},
    )
    return render(request, "backoffice/notice_detail.html", {"detail": detail})
