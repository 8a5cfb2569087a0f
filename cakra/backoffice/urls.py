"""Officer back office, mounted at /backoffice/ (namespace ``backoffice``)."""

from django.urls import URLPattern, path

from cakra.backoffice.views import account, login, officers, review

app_name = "backoffice"
urlpatterns: list[URLPattern] = [
    path("", review.queue_view, name="queue"),
    path("login/", login.login_view, name="login"),
    path("login/otp/", login.otp_view, name="otp"),
    path("logout/", login.logout_view, name="logout"),
    path("account/password/", account.password_change_view, name="password_change"),
    path("account/reauth/", account.reauth_view, name="reauth"),
    path("officers/", officers.officer_list_view, name="officers"),
    path("officers/<int:officer_id>/deactivate/", officers.officer_deactivate_view, name="officer_deactivate"),
    path("officers/<int:officer_id>/reactivate/", officers.officer_reactivate_view, name="officer_reactivate"),
    path("violations/<uuid:violation_id>/", review.violation_detail_view, name="violation"),
    path("violations/<uuid:violation_id>/validate/", review.violation_validate_view, name="validate"),
    path("violations/<uuid:violation_id>/reject/", review.violation_reject_view, name="reject"),
    path("evidence/<uuid:evidence_id>/", review.evidence_view, name="evidence"),
    path("notices/<str:number>/", review.notice_detail_view, name="notice"),
]
