"""Backfill day 0 of existing infusions from their start in the site's time zone (data only)."""

from zoneinfo import ZoneInfo

from django.db import migrations


def fill_day0(apps, schema_editor):
    Infusion = apps.get_model("trials", "Infusion")
    # The BEFORE UPDATE audit trigger asks for who and why, like any other update.
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('pghistory.context_metadata', %s, true)",
            ['{"user": "migration", "reason": "backfill day 0 in the site time zone", "channel": "migration"}'],
        )
    for infusion in Infusion.objects.filter(infusion_date__isnull=True).select_related("participant__site"):
        zone = ZoneInfo(infusion.participant.site.timezone)
        Infusion.objects.filter(pk=infusion.pk).update(infusion_date=infusion.start_at.astimezone(zone).date())


class Migration(migrations.Migration):
    dependencies = [("trials", "0005_site_timezone_and_day0")]

    operations = [migrations.RunPython(fill_day0, migrations.RunPython.noop)]
