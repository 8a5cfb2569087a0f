"""Citizen portal pages. Thin: forms validate, lookup/selectors decide, templates show.

Public on purpose (no login): the notice number + plate pair is the proof, and
a successful check opens the notice to this browser session only.
"""

from __future__ import annotations

import uuid

import structlog
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from cakra.enforcement.derive_requests import evidence_derive_request
from cakra.portal.access import grant_add, grant_is_live, grants_clear
from cakra.portal.forms import LookupForm, notice_number_prefill
from cakra.portal.language import portal_language
from cakra.portal.lookup import Outcome, lookup_client_hit, lookup_match
from cakra.portal.presenters import notice_page_context
from cakra.portal.selectors import (
    evidence_get_for_citizen,
    evidence_list_for_notice,
    notice_get_for_citizen,
    region_list_for_senders,
)
from cakra.security.denials import access_denied_log
from cakra.security.ratelimit import client_address

log = structlog.get_logger(__name__)

HTTP_SEE_OTHER = 303
HTTP_BAD_REQUEST = 400
HTTP_NOT_FOUND = 404
HTTP_TOO_MANY_REQUESTS = 429
# Advisory Retry-After values: the default burst window per client, the
# failure window per notice number (cakra.config.settings CAKRA_PORTAL_RATE_LIMITS).
RETRY_AFTER_CLIENT_SECONDS = 60
RETRY_AFTER_NUMBER_SECONDS = 3600


class HttpResponseSeeOther(HttpResponseRedirect):
    """POST → GET: a 303 makes every browser follow with GET."""

    status_code = HTTP_SEE_OTHER


@require_safe
@portal_language
def home(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "portal/home.html",
        {"form": LookupForm(), "regions": region_list_for_senders()},
    )


def _lookup_page(request: HttpRequest, *, form: LookupForm, status: int = 200, no_match: bool = False) -> HttpResponse:
    return render(request, "portal/lookup.html", {"form": form, "no_match": no_match}, status=status)


def _rate_limited(request: HttpRequest, *, retry_after: int) -> HttpResponse:
    response = render(request, "portal/rate_limited.html", status=HTTP_TOO_MANY_REQUESTS)
    response["Retry-After"] = str(retry_after)
    return response


@require_http_methods(["GET", "HEAD", "POST"])
@portal_language
def lookup(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        prefill = notice_number_prefill(request.GET.get("n", ""))
        form = LookupForm(initial={"number": prefill} if prefill else None)
        context = {"form": form, "no_match": False}
        if prefill:
            context["language_next"] = f"{request.path}?n={prefill}"
        return render(request, "portal/lookup.html", context)

    # Every POST counts against the client, before anything is looked at.
    if not lookup_client_hit(client=client_address(request)):
        log.info("portal.lookup", outcome="client_limited")
        return _rate_limited(request, retry_after=RETRY_AFTER_CLIENT_SECONDS)
    form = LookupForm(request.POST)
    if not form.is_valid():
        log.info("portal.lookup", outcome="invalid_input")
        return _lookup_page(request, form=form, status=HTTP_BAD_REQUEST)
    result = lookup_match(number=form.cleaned_data["number"], plate=form.cleaned_data["plate"])
    # Outcome only: the number and plate typed are never logged.
    log.info("portal.lookup", outcome=str(result.outcome))
    if result.outcome == Outcome.GRANTED and result.notice_id is not None:
        grant_add(request=request, notice_id=result.notice_id)
        return HttpResponseSeeOther(reverse("portal:notice", kwargs={"notice_id": result.notice_id}))
    if result.outcome == Outcome.NUMBER_LIMITED:
        return _rate_limited(request, retry_after=RETRY_AFTER_NUMBER_SECONDS)
    # "Unknown number" and "wrong plate" land here alike: the same template,
    # status and bytes, and the typed values are not echoed back (they differ
    # between the two cases and would make the answers distinguishable).
    return _lookup_page(request, form=LookupForm(), status=HTTP_NOT_FOUND, no_match=True)


def _refusal_log(request: HttpRequest, *, granted: bool, object_type: str, object_id: uuid.UUID) -> None:
    # Internal ids only: the session's grants hold no number or plate.
    reason = "not_found" if granted else "no_live_grant"
    access_denied_log(
        request=request, surface="portal", reason=reason, object_type=object_type, object_id=str(object_id)
    )


@require_safe
@portal_language
def notice(request: HttpRequest, notice_id: uuid.UUID) -> HttpResponse:
    granted = grant_is_live(request=request, notice_id=notice_id)
    found = notice_get_for_citizen(notice_id=notice_id, granted=granted)
    if found is None:
        # The same for "no such notice", "not granted" and "grant expired".
        _refusal_log(request, granted=granted, object_type="notice", object_id=notice_id)
        return redirect("portal:lookup")
    evidence = evidence_list_for_notice(notice=found)
    # Never decoded here: a missing photo is asked of a worker and the page
    # says it is being prepared (or, once given up on, not available).
    evidence_derive_request(evidence=evidence)
    context = notice_page_context(notice=found, evidence=evidence)
    return render(request, "portal/notice.html", context)


@require_safe
def evidence(request: HttpRequest, notice_id: uuid.UUID, evidence_id: uuid.UUID) -> HttpResponse:
    granted = grant_is_live(request=request, notice_id=notice_id)
    found = evidence_get_for_citizen(notice_id=notice_id, evidence_id=evidence_id, granted=granted)
    if found is None:
        _refusal_log(request, granted=granted, object_type="evidence", object_id=evidence_id)
        raise Http404
    try:
        # The derivative: re-encoded, metadata-free JPEG (never the original).
        with found.derivative.open("rb") as handle:
            body = handle.read()
    except FileNotFoundError:
        log.warning("portal.evidence_missing", evidence_id=str(found.id))
        raise Http404 from None
    response = HttpResponse(body, content_type="image/jpeg")
    response["Content-Disposition"] = "inline"
    response["Cache-Control"] = "no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@require_POST
def finish(request: HttpRequest) -> HttpResponse:
    """Forget this browser's access to every notice (shared phones)."""
    grants_clear(request=request)
    return HttpResponseSeeOther(reverse("portal:home"))


@portal_language
def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: a page a citizen understands instead of Django's
    technical one (the usual cause is a browser that dropped its cookies)."""
    log.info("portal.csrf_failure")
    return render(request, "portal/csrf_failure.html", status=403)
