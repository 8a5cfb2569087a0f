"""Citizen portal URLs, mounted at the site root.

Notices are addressed by their internal UUID only: no notice number or plate
ever travels in a URL. ``/cek/?n=<number>`` is the one exception, the link in
messages, and it only pre-fills the form.
"""

from django.urls import include, path

from cakra.portal import views

app_name = "portal"
urlpatterns = [
    path("", views.home, name="home"),
    path("cek/", views.lookup, name="lookup"),
    path("notice/<uuid:notice_id>/", views.notice, name="notice"),
    path("notice/<uuid:notice_id>/evidence/<uuid:evidence_id>/", views.evidence, name="evidence"),
    path("selesai/", views.finish, name="finish"),
    # Django's set_language: POST only with CSRF, and it refuses a ``next``
    # that leaves this host.
    path("i18n/", include("django.conf.urls.i18n")),
]
