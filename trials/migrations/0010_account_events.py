import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('trials', '0009_rescue_therapy_and_insulin_log'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='AccountEvent',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('at', models.DateTimeField(auto_now_add=True)),
                ('kind', models.CharField(choices=[('account_created', 'Account created'), ('account_changed', 'Account details changed'), ('privileges_changed', 'Staff, superuser, group or permission change'), ('password_reset', 'Password reset by another user'), ('lockout_released', 'Sign-in lockout released')], max_length=20)),
                ('username', models.CharField(help_text="The account's username at the time.", max_length=150)),
                ('changes', models.JSONField(blank=True, default=dict, help_text='{field: [old, new]}; never a password.')),
                ('reason', models.TextField()),
                ('channel', models.CharField(default='admin', max_length=20)),
                ('actor', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('user', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='account_events', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'ordering': ['-at', '-pk'],
                'permissions': [('reset_user_password', 'Can reset the password of another user')],
                'indexes': [models.Index(fields=['username', 'at'], name='trials_acco_usernam_0f13d2_idx')],
            },
        ),
    ]
