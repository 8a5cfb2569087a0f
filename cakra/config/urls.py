"""URL map: the public API, the citizen portal and the officer back office."""

from django.urls import include, path

from cakra.api.api import api_urls

urlpatterns = [
    path("api/v1/", api_urls()),
    path("backoffice/", include("cakra.backoffice.urls")),
    path("", include("cakra.portal.urls")),
]
