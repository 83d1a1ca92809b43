"""The demo's chat rooms in headless Chromium, several users at once, against real uWSGI.

Each user has a browser context of their own (their own cookies), logged in through the
example's login page or Django's admin.  To show that a message did *not* reach a page without
waiting an arbitrary time, a test sends a second message that the page does receive, on the
same WebSocket, right after the first: Redis delivers a subscriber's messages in publication
order, so once the second is shown, the first would have been too.
"""

from __future__ import annotations

import uuid

from playwright.sync_api import Page, expect

from tests.browser.conftest import (
    ARTIFACTS,
    PREFIX,
    TIMEOUT_MS,
    base_url,
    log_in_through_admin,
)

USERS = ("john", "mary", "admin")


def tag() -> str:
    return uuid.uuid4().hex[:6]


def send(page: Page, text: str) -> None:
    """Type ``text`` into the room's box and submit; wait until the page took it."""
    page.fill("#text", text)
    page.press("#text", "Enter")
    expect(page.locator("#text")).to_have_value("", timeout=TIMEOUT_MS)


def message(page: Page, text: str):  # noqa: ANN201
    return page.locator("#messages li.message", has_text=text)


def expect_connected(*pages: Page) -> None:
    for page in pages:
        expect(page.locator("#ws-state")).to_have_attribute("data-state", "connected")


def test_home_page_leads_to_the_rooms_and_the_login(site, open_page, saved_logins):
    page = open_page()
    page.goto(base_url(site) + "/")
    for name, path in (("Broadcast chat", "/chat/"), ("User chat", "/userchat/")):
        expect(page.get_by_role("link", name=name)).to_have_attribute("href", path)
    page.get_by_role("link", name="Group chat").click()
    page.wait_for_url(base_url(site) + "/login/?next=/groupchat/")
    page.fill("#id_username", "mary")
    page.fill("#id_password", "secret")
    page.click("form.login button[type=submit]")
    page.wait_for_url(base_url(site) + "/groupchat/")
    expect(page.locator("#whoami")).to_have_text("mary")
    expect_connected(page)
    saved_logins["mary"] = page.context.storage_state()


def test_broadcast_chat_between_two_browsers(site, open_page, redis_server, saved_logins):
    # an empty room: forget the message persisted by earlier tests (WS4REDIS_EXPIRE)
    redis_server.client().delete(f"{PREFIX}:broadcast:chat")
    john = open_page("john", user="john", server=site, path="/chat/")
    mary = open_page("mary")
    log_in_through_admin(mary, site, "mary", next_path="/chat/")
    saved_logins["mary"] = mary.context.storage_state()
    expect_connected(john, mary)

    # through Django: an Ajax POST, published by the view with RedisPublisher
    send(john, "Hello Mary! Can you see this?")
    for page in (john, mary):
        expect(message(page, "Hello Mary!")).to_contain_text("via Django")
    expect(message(john, "Hello Mary!")).to_have_class("message mine")
    expect(message(mary, "Hello Mary!").locator(".from")).to_have_text("john")

    # through the WebSocket itself (publish-broadcast)
    mary.check("#via-websocket")
    send(mary, "Hi John, yes: this one went straight through the WebSocket.")
    for page in (john, mary):
        expect(message(page, "straight through the WebSocket")).to_contain_text("via WebSocket")
    expect(message(john, "straight through").locator(".from")).to_have_text("mary")
    send(john, "Great, and neither page reloaded.")
    expect(message(mary, "neither page reloaded")).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    john.screenshot(path=ARTIFACTS / "chat-two-users.png")

    # every browser on the page, logged in or not
    visitor = open_page("visitor", server=site, path="/chat/")
    expect_connected(visitor)
    send(visitor, "Anyone can join in.")
    for page in (john, mary, visitor):
        expect(message(page, "Anyone can join in.").locator(".from")).to_have_text("anonymous")


def test_user_chat_reaches_only_the_chosen_user(site, open_page):
    john, mary, admin = (open_page(u, user=u, server=site, path="/userchat/") for u in USERS)
    expect_connected(john, mary, admin)
    recipients = john.locator("fieldset.people input[name=to]")
    expect(recipients).to_have_count(3)
    assert [recipients.nth(i).get_attribute("value") for i in range(3)] == [
        "admin",
        "john",
        "mary",
    ]
    suffix = tag()

    john.check("input[name=to][value=mary]")
    send(john, f"Just for Mary ({suffix})")
    expect(message(mary, f"Just for Mary ({suffix})").locator(".to")).to_have_text("→ mary")
    expect(message(john, f"Just for Mary ({suffix})")).to_be_visible()  # the sender's copy

    # admin: the next message on the same WebSocket arrives, the one for Mary never did
    john.check("input[name=to][value=admin]")
    send(john, f"Now for admin ({suffix})")
    expect(message(admin, f"Now for admin ({suffix})")).to_be_visible()
    expect(message(admin, f"Just for Mary ({suffix})")).to_have_count(0)

    # and Mary never saw John's message to admin
    admin.check("input[name=to][value=mary]")
    send(admin, f"Admin to Mary ({suffix})")
    expect(message(mary, f"Admin to Mary ({suffix})")).to_be_visible()
    expect(message(mary, f"Now for admin ({suffix})")).to_have_count(0)
    expect(message(john, f"Admin to Mary ({suffix})")).to_have_count(0)


def test_group_chat_reaches_the_group_members_only(site, open_page):
    john, mary, admin = (open_page(u, user=u, server=site, path="/groupchat/") for u in USERS)
    expect_connected(john, mary, admin)
    expect(admin.locator("#text")).to_be_disabled()  # admin is in no group
    expect(john.locator("input[name=group][value=chatters]")).to_be_checked()
    suffix = tag()

    send(john, f"Hello chatters ({suffix})")
    for page in (john, mary):
        expect(message(page, f"Hello chatters ({suffix})").locator(".to")).to_have_text(
            "→ chatters"
        )
    message_id = john.locator("#messages li.message", has_text=suffix).get_attribute("data-id")

    # admin sees the notice the view publishes after the message, never the message itself
    notice = admin.locator(f'#messages li.notice[data-id="{message_id}"]')
    expect(notice).to_have_text("john wrote to chatters")
    expect(message(admin, suffix)).to_have_count(0)
    # members get the message, not the notice
    expect(john.locator(f'#messages li.notice[data-id="{message_id}"]')).to_have_count(0)

    send(mary, f"Hi John ({suffix})")
    expect(message(john, f"Hi John ({suffix})").locator(".from")).to_have_text("mary")
    expect(admin.locator("#messages li.notice", has_text="mary wrote to chatters")).to_be_visible()
    expect(message(admin, f"Hi John ({suffix})")).to_have_count(0)
