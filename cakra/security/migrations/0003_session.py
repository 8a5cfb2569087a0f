"""Sessions keyed by a hash of the cookie value, per realm (cakra.security.sessions).

The rows of Django's own session table held cookie values in clear: they are
removed (everyone signs in again once), so no backup taken afterwards holds
a working session.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('security', '0002_ratelimit_counter'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ('sessions', '0001_initial'),
    ]

    operations = [
        migrations.CreateModel(
            name='Session',
            fields=[
                ('session_data', models.TextField(verbose_name='session data')),
                ('expire_date', models.DateTimeField(db_index=True, verbose_name='expire date')),
                ('session_key', models.CharField(max_length=64, primary_key=True, serialize=False)),
                ('realm', models.CharField(choices=[('portal', 'Citizen portal'), ('backoffice', 'Officer back office')], max_length=16)),
                ('officer', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name': 'session',
                'verbose_name_plural': 'sessions',
                'db_table': 'security_session',
                'abstract': False,
            },
        ),
        migrations.RunSQL('DELETE FROM django_session', migrations.RunSQL.noop),
    ]
