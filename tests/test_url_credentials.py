"""A user name or password in a URL setting (`https://user:pw@host`): the base URL's made
aiohttp refuse every request ("internal error: ValueError: Cannot combine AUTHORIZATION
header with ... credentials encoded in URL"), the stack URL's went to the API inside
X-Stack-Url and came back in its error message, the S3 endpoint's ended as
"HTTPClientError", and a URL refused as no http(s) URL was echoed password and all.
Each is now refused before any request (exit 2) in one line that does not show it."""

from __future__ import annotations

import pytest

from harvester.cli import main

SECRET = "pw-DO-NOT-LEAK"
URLS = {
    "--base-url": f"http://user:{SECRET}@127.0.0.1:9",
    "--stack-url": f"https://user:{SECRET}@name.grafana.net",
    "--s3-endpoint-url": f"http://user:{SECRET}@127.0.0.1:9",
}
NEEDS = {
    "--base-url": [],
    "--stack-url": ["--api", "v6"],
    "--s3-endpoint-url": ["--out", "s3://bucket/prefix/"],
}


@pytest.mark.parametrize("flag", list(URLS))
def test_a_password_in_a_url_is_refused_in_one_line_that_does_not_show_it(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["harvest", "--run", "1", "--token", "t", *NEEDS[flag], flag, URLS[flag]]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert SECRET not in err and err.count("\n") == 1
    assert "holds a user name or password" in err and "user:***@" in err


@pytest.mark.parametrize(
    ("flag", "url"),
    [("--base-url", f"ftp://user:{SECRET}@example.com"),
     ("--stack-url", f"http://user:{SECRET}@name.grafana.net"),
     ("--s3-endpoint-url", f"ftp://user:{SECRET}@example.com")],
)  # fmt: skip
def test_a_url_refused_for_its_scheme_is_shown_without_its_password(
    flag: str, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["harvest", "--run", "1", "--token", "t", *NEEDS[flag], flag, url]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert SECRET not in err and "user:***@" in err and err.count("\n") == 1


def test_config_show_does_not_show_a_password_in_a_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--token", "t", "--base-url", URLS["--base-url"]]) == 2
    assert SECRET not in capsys.readouterr().err
