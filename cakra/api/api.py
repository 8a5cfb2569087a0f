"""The public JSON API (django-ninja); OpenAPI 3 at /api/v1/openapi.json."""

from ninja import NinjaAPI

api = NinjaAPI(title="Cakra API", version="1.0.0", urls_namespace="api")
