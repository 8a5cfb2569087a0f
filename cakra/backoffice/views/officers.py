"""Officer administration in the back office: administrators deactivate and
re-activate the officers of their own region, after a fresh code."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from cakra.backoffice.access import (
    OfficerRequest,
    admin_required,
    officer_object_not_found,
    officer_required,
    reauth_required,
)
from cakra.backoffice.selectors import officer_get_for_admin, officer_list_for_admin
from cakra.backoffice.services import officer_deactivate, officer_reactivate
from cakra.enforcement.errors import NotFoundError


@require_GET
@officer_required
@admin_required
@reauth_required
def officer_list_view(request: OfficerRequest) -> HttpResponse:
    return render(request, "backoffice/officers.html", {"officers": officer_list_for_admin(admin=request.user)})


@require_POST
@officer_required
@admin_required
@reauth_required
def officer_deactivate_view(request: OfficerRequest, officer_id: int) -> HttpResponse:
    try:
        officer = officer_get_for_admin(admin=request.user, officer_id=officer_id)
    except NotFoundError as exc:
        raise officer_object_not_found(request, object_type="officer", object_id=officer_id) from exc
    if officer.pk == request.user.pk:
        # The last administrator of a region must not shut the region out by a slip.
        messages.error(request, _("You cannot deactivate your own account."))
        return redirect("backoffice:officers")
    officer_deactivate(officer=officer, actor_type="officer", actor_id=str(request.user.pk))
    messages.success(request, _("%(username)s is deactivated and signed out everywhere.") % {"username": officer})
    return redirect("backoffice:officers")


@require_POST
@officer_required
@admin_required
@reauth_required
def officer_reactivate_view(request: OfficerRequest, officer_id: int) -> HttpResponse:
    try:
        officer = officer_get_for_admin(admin=request.user, officer_id=officer_id)
    except NotFoundError as exc:
        raise officer_object_not_found(request, object_type="officer", object_id=officer_id) from exc
    officer_reactivate(officer=officer, actor_type="officer", actor_id=str(request.user.pk))
    messages.success(request, _("%(username)s can sign in again.") % {"username": officer})
    return redirect("backoffice:officers")
