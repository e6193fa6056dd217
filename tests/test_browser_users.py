"""The admins' users page in Chromium, and what deactivation does to an open room page."""

import re

from playwright.sync_api import expect

from tests.conftest import Server, unique
from tests.test_browser import Person, browser, people

__all__ = ["browser", "people"]  # The fixtures, used by name.


def test_deactivating_a_user_sends_their_open_room_page_to_sign_in(
    server: Server, people: list[Person]
) -> None:
    """The admin finds a user on the users page and deactivates them: the user's open room
    page goes to the sign-in page within seconds, and signing in again is refused."""
    assert server.admin is not None
    member, admin = people[0], people[1]
    account = server.register(unique("leaving"))
    member.sign_in(account.username)
    member.goto("/rooms/general")
    expect(member.page.locator("#status")).to_have_text("live")

    admin.sign_in(server.admin.username)
    admin.page.click("text=Users")
    admin.page.wait_for_url("**/admin/users")
    admin.page.fill("#user-q", account.username)
    admin.page.click("#user-search button[type=submit]")
    row = admin.page.locator(f'#users tr[data-user="{account.username}"]')
    expect(row.locator(".state")).to_have_text("active")
    row.locator("button[value=deactivate]").click()
    expect(row.locator(".state")).to_have_text("deactivated")

    member.page.wait_for_url(re.compile(r"/login\?next=%2Frooms%2Fgeneral$"), timeout=5_000)
    member.page.fill("#username", account.username)
    member.page.fill("#password", account.password)
    member.page.click("#login-form button[type=submit]")
    expect(member.page.locator("#form-error")).to_have_text("Incorrect username or password.")
    assert admin.console_errors == []
