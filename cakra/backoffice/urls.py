"""Officer back office, mounted at /backoffice/ (namespace ``backoffice``)."""

from django.urls import URLPattern, path

from cakra.backoffice.views import login, review

app_name = "backoffice"
urlpatterns: list[URLPattern] = [
    path("", review.queue_view, name="queue"),
    path("login/", login.login_view, name="login"),
    path("login/otp/", login.otp_view, name="otp"),
    path("logout/", login.logout_view, name="logout"),
    path("violations/<uuid:violation_id>/", review.violation_detail_view, name="violation"),
    path("violations/<uuid:violation_id>/validate/", review.violation_validate_view, name="validate"),
    path("violations/<uuid:violation_id>/reject/", review.violation_reject_view, name="reject"),
    path("evidence/<uuid:evidence_id>/", review.evidence_view, name="evidence"),
    path("notices/<str:number>/", review.notice_detail_view, name="notice"),
]
