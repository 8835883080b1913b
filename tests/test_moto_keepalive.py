"""The tests' and the bench's S3 server keeps connections alive, as a real store does
(`tests/moto_keepalive.py`): one connection carries request after request, whatever
each answer was and whether the server read the body or not."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

from tests.s3_helpers import S3Server


def test_one_connection_carries_every_request(s3: S3Server, bucket: str) -> None:
    s3.client().put_object(Bucket=bucket, Key="k", Body=b"x" * 10)
    address = urlsplit(s3.url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=10)
    asked = [
        ("PUT", "/no-such-bucket-here/big", b"y" * 300_000),  # refused, its body unread
        ("GET", f"/{bucket}?list-type=2", b""),
        ("HEAD", f"/{bucket}", b""),
        ("GET", "/no-such-bucket-here/k", b""),  # an error answer
        ("GET", f"/{bucket}?list-type=2", b""),
    ]
    answers = []
    connection.connect()
    first = connection.sock
    try:
        for method, path, body in asked:
            connection.request(method, path, body=body)
            answer = connection.getresponse()
            content = answer.read()
            assert answer.getheader("Connection") != "close"
            assert connection.sock is first  # not closed, nor opened again
            answers.append((answer.status, content))
    finally:
        connection.close()
    assert [status for status, _ in answers] == [404, 200, 200, 404, 200]
    assert answers[1] == answers[4] and b"<Key>k</Key>" in answers[1][1]
