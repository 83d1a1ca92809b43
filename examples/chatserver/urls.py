"""URLs of the example project."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.templatetags.static import static
from django.urls import path
from django.views.generic import RedirectView

from chatserver.views import BroadcastChatView, GroupChatView, HomeView, UserChatView

urlpatterns = [
    path("", HomeView.as_view(), name="home"),
    path("chat/", BroadcastChatView.as_view(), name="broadcast_chat"),
    path("userchat/", UserChatView.as_view(), name="user_chat"),
    path("groupchat/", GroupChatView.as_view(), name="group_chat"),
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    # for pages that name no icon, such as the admin's
    path("favicon.ico", RedirectView.as_view(url=static("chatserver/favicon.svg"))),
]
# Standalone uWSGI has no web server for static files (see the deployment docs).
urlpatterns += staticfiles_urlpatterns()
