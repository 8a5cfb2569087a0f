"""The evidence photos the driver attaches: a small pool of realistic captures, encoded once per run."""

from __future__ import annotations

import base64
import io
import json
from datetime import datetime
from zoneinfo import ZoneInfo

from PIL import Image

from cakra.demo.images import capture_jpeg
from cakra.ops.bench.seeding import plate_for_index

PHOTO_POOL = 6


def photo_pool(size: int = PHOTO_POOL) -> list[bytes]:
    """1080p JPEGs of realistic weight (~250-350 KB): a drawn scene with sensor-like noise."""
    pool = []
    when = datetime.now(ZoneInfo("Asia/Jakarta"))
    for n in range(size):
        scene = capture_jpeg(
            plate=plate_for_index(n),
            colour=["Hitam", "Putih", "Merah", "Biru", "Silver", "Abu-abu"][n % 6],
            camera_id=f"BENCH-{n:03d}",
            captured_at=when,
            location="Jl. Jend. Sudirman, Jakarta",
            caption="Pasal 287(1)",
            seed=n,
            quality=92,
        )
        image = Image.open(io.BytesIO(scene))
        noisy = Image.blend(image, Image.effect_noise(image.size, 28).convert("RGB"), 0.11)
        out = io.BytesIO()
        noisy.save(out, format="JPEG", quality=88)
        pool.append(out.getvalue())
    return pool


def photo_fragments(pool: list[bytes]) -> list[bytes]:
    """Each photo of the pool as the JSON string of its base64 (quotes included), encoded once per run.

    Every batch body refers to these: base64 makes a photo a third larger,
    and encoding it again for each of the run's captures would cost the
    driver more CPU than everything else it does.
    """
    return [json.dumps(base64.b64encode(photo).decode("ascii")).encode("ascii") for photo in pool]
