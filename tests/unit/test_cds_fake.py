"""The local CDS fake, driven through the real ``cdsapi.Client`` (cdsapi >= 0.7)."""

from __future__ import annotations

import re
import socket
import time
from urllib.parse import urlsplit

import pytest
import requests

cdsapi = pytest.importorskip("cdsapi")

from smcast.testing.cds_fake import FAST_CLIENT_KWARGS, FakeCDS  # noqa: E402

pytestmark = [pytest.mark.usefixtures("cds_offline"), pytest.mark.timeout(30)]

DATASET = "reanalysis-era5-land"
REQUEST = {
    "variable": ["2m_temperature"],
    "year": "2024",
    "month": "01",
    "day": ["01"],
    "time": ["00:00"],
    "data_format": "netcdf",
    "download_format": "unarchived",
}
PAYLOAD = b"CDF\x01" + bytes(range(256)) * 64  # stands in for a NetCDF file


def _responder(seen: list | None = None):
    def respond(dataset: str, request: dict) -> bytes:
        if seen is not None:
            seen.append((dataset, request))
        return PAYLOAD
    return respond


def _client(cds: FakeCDS, **overrides):
    return cdsapi.Client(url=cds.url, key=cds.key, **{**FAST_CLIENT_KWARGS, **overrides})


def test_retrieve_downloads_the_responders_bytes_and_records_the_request(tmp_path):
    seen: list = []
    with FakeCDS(_responder(seen)) as cds:
        assert urlsplit(cds.url).hostname == "127.0.0.1"
        target = tmp_path / "out.nc"
        out = _client(cds).retrieve(DATASET, REQUEST, str(target))

        assert out == str(target)
        assert target.read_bytes() == PAYLOAD
        assert cds.requests == [(DATASET, REQUEST)]
        assert seen == [(DATASET, REQUEST)]
        assert cds.submissions == 1
        assert cds.tokens_seen == {cds.key}
        # the exact conversation cdsapi 0.7.7 / ecmwf-datastores-client has with the service
        paths = [(m, re.sub(r"/jobs/[^/]+", "/jobs/<id>", p))
                 for m, p in cds.calls if not p.startswith("/download/")]
        assert paths == [
            ("GET", "/api/catalogue/v1/messages"),
            ("GET", f"/api/retrieve/v1/processes/{DATASET}"),
            ("POST", f"/api/retrieve/v1/processes/{DATASET}/execution"),
            ("GET", "/api/retrieve/v1/jobs/<id>"),  # status poll
            ("GET", "/api/retrieve/v1/jobs/<id>"),  # look-up of the results link
            ("GET", "/api/retrieve/v1/jobs/<id>/results"),
        ]
        assert [m for m, p in cds.calls if p.startswith("/download/")] == ["HEAD", "GET"]


def test_result_asset_points_back_at_the_fake():
    with FakeCDS(_responder()) as cds:
        results = _client(cds).retrieve(DATASET, REQUEST)  # no target: a Results object
        assert urlsplit(results.location).hostname == "127.0.0.1"
        assert urlsplit(results.location).port == cds.port
        assert results.content_length == len(PAYLOAD)
        assert results.location.endswith(".nc")


def test_fake_client_helper_uses_fast_settings(tmp_path):
    with FakeCDS(_responder()) as cds:
        client = cds.client()
        assert (client.retry_max, client.sleep_max, client.progress) == (1, 0.1, False)
        client.retrieve(DATASET, REQUEST, str(tmp_path / "a.nc"))
        assert (tmp_path / "a.nc").read_bytes() == PAYLOAD


@pytest.mark.parametrize("status", [500, 503])
def test_fail_first_raises_without_retries_then_the_next_call_succeeds(tmp_path, status):
    with FakeCDS(_responder(), fail_first=1, fail_status=status) as cds:
        client = _client(cds, retry_max=1)  # retry_max=1: a single try per HTTP call
        with pytest.raises(requests.HTTPError) as err:
            client.retrieve(DATASET, REQUEST, str(tmp_path / "a.nc"))
        assert err.value.response.status_code == status
        assert str(err.value).startswith(f"{status} Server Error")
        assert err.value.response.json()["status"] == status
        assert cds.requests == [] and cds.submissions == 1

        client.retrieve(DATASET, REQUEST, str(tmp_path / "a.nc"))
        assert (tmp_path / "a.nc").read_bytes() == PAYLOAD
        assert cds.submissions == 2 and len(cds.requests) == 1


def test_cdsapi_retries_5xx_itself_when_retry_max_allows(tmp_path):
    # cdsapi passes retry_max/sleep_max to multiurl.robust: 5xx (and 408/429) are retried after
    # sleep_max seconds, up to retry_max tries in all.
    with FakeCDS(_responder(), fail_first=2, fail_status=503) as cds:
        start = time.monotonic()
        _client(cds, retry_max=3, sleep_max=0.05).retrieve(DATASET, REQUEST,
                                                          str(tmp_path / "a.nc"))
        assert time.monotonic() - start < 5
        assert (tmp_path / "a.nc").read_bytes() == PAYLOAD
        assert cds.submissions == 3 and len(cds.requests) == 1


def test_wrong_key_gets_401_and_the_key_stays_out_of_the_message(tmp_path):
    with FakeCDS(_responder()) as cds:
        client = cdsapi.Client(url=cds.url, key="not-the-right-secret", **FAST_CLIENT_KWARGS)
        with pytest.raises(requests.HTTPError) as err:
            client.retrieve(DATASET, REQUEST, str(tmp_path / "a.nc"))
        assert err.value.response.status_code == 401
        assert str(err.value).startswith("401 Client Error")
        assert "Authentication failed" in str(err.value)
        assert "not-the-right-secret" not in str(err.value)
        assert "not-the-right-secret" not in err.value.response.text
        assert cds.tokens_seen == {"not-the-right-secret"}
        assert cds.requests == []
        assert not (tmp_path / "a.nc").exists()


def test_wrong_key_is_accepted_when_not_rejecting(tmp_path):
    with FakeCDS(_responder(), reject_wrong_key=False) as cds:
        client = cdsapi.Client(url=cds.url, key="any-other-key", **FAST_CLIENT_KWARGS)
        client.retrieve(DATASET, REQUEST, str(tmp_path / "a.nc"))
        assert (tmp_path / "a.nc").read_bytes() == PAYLOAD
        assert "any-other-key" in cds.tokens_seen


def test_queued_job_is_polled_until_successful(tmp_path):
    # the client's first pause between polls is a fixed 1.0 s, later ones sleep_max
    with FakeCDS(_responder(), queued_polls=2) as cds:
        start = time.monotonic()
        _client(cds).retrieve(DATASET, REQUEST, str(tmp_path / "a.nc"))
        elapsed = time.monotonic() - start
        assert (tmp_path / "a.nc").read_bytes() == PAYLOAD
        job_gets = [p for m, p in cds.calls
                    if m == "GET" and "/jobs/" in p and not p.endswith("/results")]
        assert len(job_gets) == 2 + 1 + 1  # accepted, running, successful, results-link look-up
        assert 1.0 <= elapsed < 5


def test_client_delete_true_still_downloads(tmp_path):
    # Client(delete=True) DELETEs the job when its Remote is collected, before the download
    with FakeCDS(_responder()) as cds:
        _client(cds, delete=True).retrieve(DATASET, REQUEST, str(tmp_path / "a.nc"))
        assert (tmp_path / "a.nc").read_bytes() == PAYLOAD


def test_failing_responder_fails_the_job(tmp_path):
    def respond(dataset, request):
        raise ValueError("no data after 2099")

    with FakeCDS(respond) as cds:
        with pytest.raises(requests.HTTPError) as err:
            _client(cds).retrieve(DATASET, REQUEST, str(tmp_path / "a.nc"))
        assert err.value.response.status_code == 400
        assert "no data after 2099" in str(err.value)


def test_stops_cleanly_and_frees_the_port():
    cds = FakeCDS(_responder())
    with cds:
        port = cds.port
        thread = cds._thread
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    assert thread is not None and not thread.is_alive()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
    cds.stop()  # idempotent


def test_key_with_colon_is_refused():
    # cdsapi would route a "UID:KEY" key to the retired pre-2024 API, which this fake is not
    with pytest.raises(ValueError):
        FakeCDS(_responder(), key="12345:abcdef")
