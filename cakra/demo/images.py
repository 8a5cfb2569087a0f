"""Synthetic ETLE camera captures: a drawn road scene with the vehicle, its
plate and the camera's data strip, as a 1080p JPEG. No real photo is used."""

from __future__ import annotations

import io
import random
from datetime import datetime

from PIL import Image, ImageDraw, ImageFont

COLOURS = {
    "Hitam": (25, 25, 28),
    "Putih": (235, 235, 230),
    "Silver": (170, 172, 175),
    "Merah": (170, 30, 35),
    "Biru": (35, 70, 150),
    "Abu-abu": (110, 110, 115),
}


def capture_jpeg(
    *,
    plate: str,
    colour: str,
    camera_id: str,
    captured_at: datetime,
    location: str,
    caption: str,
    seed: int,
    size: tuple[int, int] = (1920, 1080),
    quality: int = 85,
) -> bytes:
    rng = random.Random(seed)  # noqa: S311 - picture variety, not security
    width, height = size
    image = Image.new("RGB", size, (96, 100, 104))
    draw = ImageDraw.Draw(image)
    # sky, buildings, road, lane markings
    draw.rectangle((0, 0, width, height // 3), fill=(150, 180, 205))
    for x in range(0, width, 160):
        top = rng.randint(height // 8, height // 3 - 20)
        shade = rng.randint(120, 190)
        draw.rectangle((x, top, x + 150, height // 3), fill=(shade, shade - 10, shade - 20))
    draw.rectangle((0, height // 3, width, height), fill=(70, 72, 75))
    for x in range(0, width, 240):
        draw.rectangle((x, height * 2 // 3, x + 120, height * 2 // 3 + 14), fill=(230, 230, 220))
    # the vehicle
    body = COLOURS.get(colour, (60, 60, 60))
    left = rng.randint(width // 5, width // 3)
    top = height // 3 + 60
    draw.rounded_rectangle((left, top + 120, left + 900, top + 520), radius=60, fill=body)
    draw.rounded_rectangle((left + 150, top, left + 750, top + 200), radius=50, fill=body)
    draw.rectangle((left + 190, top + 30, left + 710, top + 170), fill=(60, 80, 100))
    for wheel_x in (left + 120, left + 620):
        draw.ellipse((wheel_x, top + 440, wheel_x + 170, top + 610), fill=(15, 15, 15))
    # the plate: black TNKB with white characters
    plate_font = ImageFont.load_default(size=64)
    plate_box = (left + 300, top + 380, left + 640, top + 470)
    draw.rectangle(plate_box, fill=(10, 10, 10), outline=(240, 240, 240), width=5)
    draw.text(
        ((plate_box[0] + plate_box[2]) // 2, (plate_box[1] + plate_box[3]) // 2),
        plate,
        fill=(245, 245, 245),
        font=plate_font,
        anchor="mm",
    )
    # camera data strip
    strip_font = ImageFont.load_default(size=30)
    draw.rectangle((0, height - 90, width, height), fill=(0, 0, 0))
    stamp = captured_at.strftime("%Y-%m-%d %H:%M:%S %Z")
    draw.text((24, height - 72), f"ETLE {camera_id}  {stamp}  {location}", fill=(255, 230, 0), font=strip_font)
    draw.text((24, height - 36), caption, fill=(255, 255, 255), font=strip_font)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()
