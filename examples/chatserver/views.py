"""Views of the example project."""

from django.views.generic import TemplateView


class HomeView(TemplateView):
    """A page with a broadcast WebSocket: everything typed is shown in every open browser."""

    template_name = "chatserver/home.html"
