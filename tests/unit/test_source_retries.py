"""What a failing Dataset source means (kubeloop.runtime.fetch): a data error naming the status or the key,
or a retry with backoff; and what a URL may show of itself."""

from __future__ import annotations

import base64

import pytest

from kubeloop.runtime import fetch
from kubeloop.runtime.jobio import DataError, RetryLater


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://host/data.csv", "https://host/data.csv"),
        ("https://host/a.csv?X-Amz-Signature=abc&X-Amz-Credential=AKIA#frag", "https://host/a.csv"),
        ("https://user:secret@host:8443/d/a.parquet?token=t", "https://host:8443/d/a.parquet"),
        ("http://[::1]:8080/x.csv?k=v", "http://[::1]:8080/x.csv"),
    ],
)
def test_a_url_is_shown_without_credentials(url: str, shown: str) -> None:
    assert fetch.public_url(url) == shown


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (404, "SourceNotFound"),
        (410, "SourceNotFound"),
        (401, "SourceForbidden"),
        (403, "SourceForbidden"),
        (400, "SourceRejected"),
        (418, "SourceRejected"),
    ],
)
def test_a_4xx_answer_is_a_data_error_naming_the_status(status: int, reason: str) -> None:
    error = fetch.http_error(status, "Phrase", "https://h/d.csv?sig=s3cr3t")
    assert isinstance(error, DataError) and error.reason == reason
    assert (
        f"HTTP {status} Phrase" in str(error)
        and "https://h/d.csv" in str(error)
        and "s3cr3t" not in str(error)
    )


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 429])
def test_5xx_and_not_now_answers_are_retried(status: int) -> None:
    error = fetch.http_error(status, "", "https://h/d.csv?sig=s3cr3t")
    assert (
        isinstance(error, fetch.Transient) and f"HTTP {status}" in str(error) and "s3cr3t" not in str(error)
    )


@pytest.mark.parametrize(
    ("code", "status", "reason", "words"),
    [
        ("NoSuchKey", 404, "SourceNotFound", "s3://b/raw/d.csv does not exist (NoSuchKey)"),
        ("NoSuchBucket", 404, "SourceNotFound", "bucket 'b' of s3://b/raw/d.csv does not exist"),
        ("AccessDenied", 403, "SourceForbidden", "access to s3://b/raw/d.csv is denied (AccessDenied)"),
        ("InvalidAccessKeyId", 403, "SourceForbidden", "credentialsSecretRef"),
        ("InvalidRange", 416, "SourceRejected", "InvalidRange (HTTP 416)"),
    ],
)
def test_s3_errors_a_user_can_fix_are_data_errors(code: str, status: int, reason: str, words: str) -> None:
    error = fetch.s3_error(code, status, "s3://b/raw/d.csv")
    assert isinstance(error, DataError) and error.reason == reason and words in str(error)


@pytest.mark.parametrize(("code", "status"), [("SlowDown", 503), ("InternalError", 500), ("", 502)])
def test_s3_errors_that_may_pass_are_retried(code: str, status: int) -> None:
    assert isinstance(fetch.s3_error(code, status, "s3://b/k"), fetch.Transient)


def test_backoff_doubles_up_to_its_cap() -> None:
    assert fetch.Retry().delays() == [2.0, 4.0, 8.0]
    assert fetch.Retry(attempts=6, first_delay=5, max_delay=20).delays() == [5, 10, 20, 20, 20]
    assert fetch.Retry(attempts=1).delays() == []
    with pytest.raises(ValueError, match="unusable retry policy"):
        fetch.Retry(attempts=0)


def test_retries_wait_between_attempts_and_stop_at_the_first_success() -> None:
    answers: list[Exception | bytes] = [fetch.Transient("HTTP 503"), fetch.Transient("HTTP 502"), b"data"]
    waits: list[float] = []

    def read() -> bytes:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert fetch.with_retries(read, "src", fetch.Retry(), waits.append) == b"data"
    assert waits == [2.0, 4.0]


def test_retries_give_up_with_the_attempts_and_the_last_error() -> None:
    calls = 0

    def read() -> bytes:
        nonlocal calls
        calls += 1
        raise fetch.Transient(f"connection refused #{calls}")

    waits: list[float] = []
    with pytest.raises(RetryLater) as raised:
        fetch.with_retries(read, "https://h/d.csv", fetch.Retry(attempts=3), waits.append)
    assert calls == 3 and waits == [2.0, 4.0]
    assert raised.value.reason == "SourceUnavailable"
    assert raised.value.facts == {"attempts": 3, "lastError": "connection refused #3"}
    assert (
        str(raised.value)
        == "https://h/d.csv could not be read in 3 attempts; last error: connection refused #3"
    )


def test_a_data_error_is_never_retried() -> None:
    waits: list[float] = []

    def read() -> bytes:
        raise DataError("SourceNotFound", "HTTP 404")

    with pytest.raises(DataError):
        fetch.with_retries(read, "x", fetch.Retry(), waits.append)
    assert waits == []


def test_user_info_becomes_basic_auth_and_leaves_the_url() -> None:
    request = fetch.url_request("https://al%40ice:p%3Ass@host:8443/d.csv?v=1")
    assert request.full_url == "https://host:8443/d.csv?v=1"
    token = request.get_header("Authorization").removeprefix("Basic ")
    assert base64.b64decode(token).decode() == "al@ice:p:ss"
    assert fetch.url_request("https://host/d.csv").get_header("Authorization") is None
