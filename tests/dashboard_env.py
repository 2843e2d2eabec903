"""Driving the dashboard over plain HTTP (httpx): sign in, read a page's CSRF token."""

from __future__ import annotations

import re

import httpx

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def token(html: str) -> str:
    found = TOKEN.search(html)
    assert found is not None, "the page has no CSRF token"
    return found.group(1)


def sign_in(base_url: str, key: str) -> httpx.Client:
    """A client holding a fresh dashboard session for ``key``."""
    client = httpx.Client(base_url=base_url, follow_redirects=False, timeout=30)
    page = client.get("/dashboard/signin")
    answer = client.post("/dashboard/signin", data={"key": key, "csrf_token": token(page.text)})
    assert answer.status_code == 303, answer.text
    return client


def form_token(client: httpx.Client, path: str) -> str:
    return token(client.get(path).text)
