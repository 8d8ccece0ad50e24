"""Owner and visitors in a real Chromium (issue 40): two tabs in their own browser contexts, side by
side on one lab that has an owner password. The visitor browses and sketches but finds every
owner's button disabled; the owner signs in (a wrong password first, which waits and is never
shown), renames a run the visitor then sees renamed, and signs out.

The dashboard runs on its own store: copies of two shipped reference runs, the lenet copy made the
user's own (so Compare offers to rename it); nothing is trained."""
from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from scripts import harness
from tests.test_access import PASSWORD
from tests.test_run_names import LENET, hostile_copy

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def server(tmp_path_factory, dashboard_on):
    root = hostile_copy(tmp_path_factory.mktemp("class-runs"), name="my lenet")
    with dashboard_on(root, owner_password=PASSWORD) as running:
        yield running


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return tmp_path_factory.mktemp("access-screenshots")


def sidebar(page):
    return page.locator('[data-testid="stSidebar"]')


def sign_in(page, password: str) -> None:
    bar = sidebar(page)
    if not bar.get_by_label("Owner password").is_visible():
        bar.get_by_text("Owner sign-in").click()
    bar.get_by_label("Owner password").fill(password)
    bar.get_by_role("button", name="Sign in").click()
    harness.wait_for_app(page)


def test_a_visitor_and_the_owner_side_by_side(browser, server, shots):
    visitor, owner = harness.new_page(browser), harness.new_page(browser)  # each tab its own context: two sessions
    try:
        for tab in (visitor, owner):
            harness.open_page(tab, server.url, "train")
            harness.assert_no_exception(tab)
            expect(sidebar(tab).get_by_text("Visiting.")).to_be_visible()
            expect(tab.get_by_role("button", name="Start training")).to_be_disabled()

        started = time.monotonic()
        sign_in(owner, "wrong password")
        expect(sidebar(owner).get_by_text("That is not the owner's password.")).to_be_visible()
        assert time.monotonic() - started >= 1.0  # a wrong password's answer waits
        assert owner.get_by_label("Owner password").input_value() == ""
        assert "wrong password" not in owner.content()
        time.sleep(1.2)  # past the first failure's wait (1 s, counted from the try): the next try is checked
        sign_in(owner, PASSWORD)
        expect(sidebar(owner).get_by_text("Signed in as the lab's owner.")).to_be_visible()
        assert PASSWORD not in owner.content()
        expect(owner.get_by_role("button", name="Start training")).to_be_enabled()
        expect(visitor.get_by_role("button", name="Start training")).to_be_disabled()  # the other session is not
        owner.screenshot(path=str(shots / "owner-train.png"))
        visitor.screenshot(path=str(shots / "visitor-train.png"))

        # the owner renames a run on Compare (the sign-in holds across pages); the visitor sees it
        owner.get_by_role("link", name="Compare").click()
        harness.wait_for_app(owner)
        manage = owner.get_by_label("New name")
        manage.fill("class demo")
        owner.get_by_role("button", name="Rename").click()
        harness.wait_for_app(owner)
        harness.assert_no_exception(owner)
        expect(owner.get_by_label("New name")).to_have_value("class demo")

        harness.open_page(visitor, server.url, "compare")
        harness.assert_no_exception(visitor)
        expect(visitor.get_by_role("button", name="Rename")).to_be_disabled()
        expect(visitor.get_by_role("button", name=re.compile("^Delete"))).to_be_disabled()
        expect(visitor.get_by_label("New name")).to_have_value("class demo")
        visitor.screenshot(path=str(shots / "visitor-compare.png"), full_page=True)

        # the visitor sketches: the models answer a visitor as they answer the owner
        harness.open_page(visitor, server.url, "sketch")
        visitor.wait_for_timeout(500)  # the canvas binds its pointer handlers after the first paint
        harness.draw_digit(visitor, "1")
        expect(visitor.locator('[data-testid="stMain"] .sk-card').first).to_be_visible(timeout=30_000)
        expect(visitor.get_by_role("button", name="Save to my handwriting")).to_be_disabled()
        harness.assert_no_exception(visitor)
        visitor.screenshot(path=str(shots / "visitor-sketch.png"))

        sidebar(owner).get_by_role("button", name="Sign out").click()
        harness.wait_for_app(owner)
        expect(sidebar(owner).get_by_text("Visiting.")).to_be_visible()
        expect(owner.get_by_role("button", name="Rename")).to_be_disabled()
    finally:
        harness.close_page(visitor)
        harness.close_page(owner)
    assert (server.checkpoints / LENET / "status.json").exists()
