"""Demo regions (Polda) with their policies. Sender identities are synthetic."""

from __future__ import annotations

from datetime import time
from typing import Any

DEMO_REGIONS: list[dict[str, Any]] = [
    {
        "code": "METRO",
        "name": "Polda Metro Jaya",
        "timezone": "Asia/Jakarta",
        "plate_prefixes": ["B"],
        "confirmation_days": 8,
        "confirmation_basis": "issue",
        "payment_days": 7,
        "channel_order": ["whatsapp", "sms", "email", "post"],
        "digital_cutoff_hours": 48,
        "print_cutoff": time(15, 0),
        "whatsapp_sender": "+62 811-1500-110",
        "sms_sender_id": "ETLE-PMJ",
        "whatsapp_phone_number_id": "109900000000110",
        "whatsapp_display_name": "ETLE Polda Metro Jaya",
        "channel_cutoff_hours": {"whatsapp": 6, "sms": 12},
        "email_from_address": "etle@metro.korlantas.example.go.id",
        "email_from_name": "ETLE Polda Metro Jaya",
        "letterhead": "KEPOLISIAN NEGARA REPUBLIK INDONESIA\nDAERAH METRO JAYA\nDIREKTORAT LALU LINTAS",
        "signatory_name": "AKBP Contoh Wibowo",
        "signatory_title": "Kasubdit Penegakan Hukum Ditlantas Polda Metro Jaya",
    },
    {
        "code": "JABAR",
        "name": "Polda Jawa Barat",
        "timezone": "Asia/Jakarta",
        "plate_prefixes": ["D", "F", "T", "E", "Z"],
        "confirmation_days": 7,
        "confirmation_basis": "violation",
        "payment_days": 7,
        "channel_order": ["whatsapp", "email", "post"],
        "digital_cutoff_hours": 72,
        "print_cutoff": time(14, 0),
        "whatsapp_sender": "+62 811-2200-110",
        "sms_sender_id": "ETLE-JABAR",
        "whatsapp_phone_number_id": "109900000000220",
        "whatsapp_display_name": "ETLE Polda Jawa Barat",
        "channel_cutoff_hours": {"whatsapp": 12},
        "email_from_address": "etle@jabar.korlantas.example.go.id",
        "email_from_name": "ETLE Polda Jawa Barat",
        "letterhead": "KEPOLISIAN NEGARA REPUBLIK INDONESIA\nDAERAH JAWA BARAT\nDIREKTORAT LALU LINTAS",
        "signatory_name": "AKBP Contoh Hidayat",
        "signatory_title": "Kasubdit Penegakan Hukum Ditlantas Polda Jawa Barat",
    },
    {
        "code": "JATIM",
        "name": "Polda Jawa Timur",
        "timezone": "Asia/Jakarta",
        "plate_prefixes": ["L", "W", "N", "P", "S", "M"],
        "confirmation_days": 10,
        "confirmation_basis": "issue",
        "payment_days": 7,
        "channel_order": ["sms", "email", "post"],
        "digital_cutoff_hours": 48,
        "print_cutoff": time(15, 30),
        "whatsapp_sender": "+62 811-3300-110",
        "sms_sender_id": "ETLE-JATIM",
        "whatsapp_phone_number_id": "109900000000330",
        "whatsapp_display_name": "ETLE Polda Jawa Timur",
        "channel_cutoff_hours": {"sms": 12},
        "email_from_address": "etle@jatim.korlantas.example.go.id",
        "email_from_name": "ETLE Polda Jawa Timur",
        "letterhead": "KEPOLISIAN NEGARA REPUBLIK INDONESIA\nDAERAH JAWA TIMUR\nDIREKTORAT LALU LINTAS",
        "signatory_name": "AKBP Contoh Santoso",
        "signatory_title": "Kasubdit Penegakan Hukum Ditlantas Polda Jawa Timur",
    },
]

# Camera sites per region: (camera id, location)
DEMO_CAMERAS: dict[str, list[tuple[str, str]]] = {
    "METRO": [
        ("JKT-0042", "Jl. Jend. Sudirman (Bundaran HI), Jakarta Pusat"),
        ("JKT-0107", "Jl. M.H. Thamrin, Jakarta Pusat"),
        ("JKT-0213", "Jl. Gatot Subroto (Semanggi), Jakarta Selatan"),
        ("JKT-0318", "Jl. Rasuna Said, Kuningan, Jakarta Selatan"),
    ],
    "JABAR": [
        ("BDG-0011", "Jl. Asia Afrika, Bandung"),
        ("BDG-0025", "Jl. Dago (Ir. H. Juanda), Bandung"),
        ("BGR-0007", "Jl. Pajajaran, Bogor"),
    ],
    "JATIM": [
        ("SBY-0031", "Jl. Basuki Rachmat, Surabaya"),
        ("SBY-0044", "Jl. Ahmad Yani, Surabaya"),
        ("MLG-0005", "Jl. Ijen, Malang"),
    ],
}
