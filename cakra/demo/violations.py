"""A stream of synthetic camera captures through the real intake service."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from zoneinfo import ZoneInfo

from django.utils import timezone

from cakra.api.intake import EvidenceSubmission, ViolationSubmission, violation_receive
from cakra.api.models import ApiKey
from cakra.demo.images import capture_jpeg
from cakra.demo.regions import DEMO_CAMERAS
from cakra.demo.seed import plate_for
from cakra.enforcement.models import Article, Region, Violation
from cakra.registry.models import Vehicle

# Roughly how often each article shows up on ETLE cameras.
ARTICLE_WEIGHTS = {
    "287(1)": 30,
    "287(2)": 20,
    "287(5)": 15,
    "289": 12,
    "291": 10,
    "283": 8,
    "280 jo 68": 3,
    "288(1)": 2,
}
UNKNOWN_PLATE_SHARE = 0.1


@dataclass(frozen=True)
class StreamResult:
    received: int
    notices: int


def violations_stream(*, count: int, seed: int, pre_validated_share: float) -> StreamResult:
    """Post ``count`` captures spread over the last three days across regions.

    A share goes through each region's pre-validated key (notices issue at
    once); the rest waits in the officers' review queue. A tenth carries a
    plate that is not in the registry, as real cameras do.
    """
    rng = random.Random(seed)  # noqa: S311 - synthetic data
    regions = list(Region.objects.order_by("code"))
    articles = {article.code: article for article in Article.objects.all()}
    codes = [code for code in ARTICLE_WEIGHTS if code in articles]
    weights = [ARTICLE_WEIGHTS[code] for code in codes]
    received = notices = 0
    now = timezone.now()
    for n in range(count):
        region = rng.choice(regions)
        pre_validated = rng.random() < pre_validated_share
        key = ApiKey.objects.filter(region=region, pre_validated=pre_validated, revoked_at__isnull=True).first()
        if key is None:
            continue
        prefixes = tuple(region.plate_prefixes)
        vehicles = [v for v in Vehicle.objects.order_by("?")[:50] if v.plate.startswith(prefixes)]
        if vehicles and rng.random() > UNKNOWN_PLATE_SHARE:
            vehicle = rng.choice(vehicles)
            plate, colour = vehicle.plate, vehicle.colour
        else:
            plate, colour = plate_for(rng.choice(region.plate_prefixes), rng), "Abu-abu"
        code = rng.choices(codes, weights)[0]
        camera_id, location = rng.choice(DEMO_CAMERAS[region.code])
        captured_at = (now - timedelta(minutes=rng.randint(30, 3 * 24 * 60))).astimezone(ZoneInfo(region.timezone))
        speed = (rng.randint(75, 120), 60) if code == "287(5)" else (None, None)
        caption = f"Pasal {code}" + (f"  {speed[0]} km/j (batas {speed[1]})" if speed[0] else "")
        image = capture_jpeg(
            plate=plate,
            colour=colour,
            camera_id=camera_id,
            captured_at=captured_at,
            location=location,
            caption=caption,
            seed=seed * 100_000 + n,
        )
        result = violation_receive(
            api_key=key,
            submission=ViolationSubmission(
                capture_id=f"{camera_id}-{captured_at:%Y%m%d%H%M%S}-{n:05d}",
                camera_id=camera_id,
                captured_at=captured_at,
                location=location,
                plate=plate,
                article_code=code,
                evidence=(EvidenceSubmission(kind="vehicle", content=image),),
                measured_speed_kmh=speed[0],
                speed_limit_kmh=speed[1],
            ),
        )
        received += int(result.created)
        notices += int(Violation.objects.filter(pk=result.violation.pk, notice__isnull=False).exists())
    return StreamResult(received=received, notices=notices)
