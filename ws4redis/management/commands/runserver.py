"""``manage.py runserver`` with a deadline for the opening handshake.

Django's own command (or, when ``django.contrib.staticfiles`` is installed, its static-files
variant), serving with :class:`ws4redis.handshake_timeout.HandshakeDeadlineServer`.  Django takes a
command from the first app in ``INSTALLED_APPS`` that has one, so ``"ws4redis"`` must come before
``"django.contrib.staticfiles"`` for this one to run; check ``ws4redis.W004`` says so otherwise.
"""

from django.apps import apps

from ws4redis.handshake_timeout import HandshakeDeadlineServer

if apps.is_installed("django.contrib.staticfiles"):
    from django.contrib.staticfiles.management.commands.runserver import Command as BaseCommand
else:
    from django.core.management.commands.runserver import Command as BaseCommand


class Command(BaseCommand):
    """``runserver`` whose requests must send their head within ``WS4REDIS_HANDSHAKE_TIMEOUT``."""

    server_cls = HandshakeDeadlineServer
