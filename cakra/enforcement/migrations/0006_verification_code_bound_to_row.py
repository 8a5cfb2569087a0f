from functools import partial

from django.db import migrations

from cakra.security.rebinding import encrypted_values_bind_to_rows


class Migration(migrations.Migration):

    dependencies = [
        ('enforcement', '0005_trim_unused_indexes'),
    ]

    operations = [
        # Values written with column-only associated data, re-sealed for their rows.
        migrations.RunPython(
            partial(encrypted_values_bind_to_rows, model_label="enforcement.Notice", field_names=("verification_code",)),
            migrations.RunPython.noop,
        ),
    ]
