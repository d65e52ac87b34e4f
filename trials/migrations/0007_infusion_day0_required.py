from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("trials", "0006_fill_infusion_day0")]

    operations = [
        migrations.AlterField(
            model_name="infusionevent",
            name="infusion_date",
            field=models.DateField(
                editable=False, help_text="Day 0: the local date of the infusion start at the site."
            ),
        ),
        migrations.AlterField(
            model_name="infusion",
            name="infusion_date",
            field=models.DateField(
                editable=False, help_text="Day 0: the local date of the infusion start at the site."
            ),
        ),
    ]
