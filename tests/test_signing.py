"""Clip URLs keep their promise: a CloudFront signed URL verifies against the distribution's public key until
``expires_at`` and no longer; an S3 pre-signed URL never promises more than the credentials that signed it last."""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlencode, urlparse, urlsplit, urlunsplit

import boto3
import pytest
from botocore.config import Config
from botocore.credentials import Credentials, RefreshableCredentials
from chalice.test import Client
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from chalicelib import wiring
from chalicelib.errors import ConfigurationError
from chalicelib.settings import Settings
from chalicelib.stores import secrets, signing
from tests.conftest import CLIPS_BUCKET, EPISODE, SOURCE_BUCKET

KEY_PAIR_ID = "K2JCJMDEHXQW5F"
DOMAIN = "d111111abcdef8.cloudfront.net"
KEY = f"audio_clips/{EPISODE}/1000-3000.mp3"
NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def key_pair() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(private_key: rsa.RSAPrivateKey) -> str:
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()


def cloudfront_accepts(url: str, public_key: rsa.RSAPublicKey, now: datetime, key_pair_id: str = KEY_PAIR_ID) -> bool:
    """What CloudFront checks of a canned-policy URL: the key pair, the signature over the policy rebuilt from the
    URL without its signing parameters, and the expiry."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    signed = {name: query.pop(name)[0] for name in ("Expires", "Signature", "Key-Pair-Id")}
    resource = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
    condition = {"DateLessThan": {"AWS:EpochTime": int(signed["Expires"])}}
    policy = json.dumps({"Statement": [{"Resource": resource, "Condition": condition}]}, separators=(",", ":"))
    signature = base64.b64decode(signed["Signature"].replace("-", "+").replace("_", "=").replace("~", "/"))
    try:
        public_key.verify(signature, policy.encode(), padding.PKCS1v15(), hashes.SHA1())
    except InvalidSignature:
        return False
    return signed["Key-Pair-Id"] == key_pair_id and now.timestamp() < int(signed["Expires"])


def cloudfront_signer(key_pair, ttl=86_400) -> signing.CloudFrontUrlSigner:
    return signing.CloudFrontUrlSigner(DOMAIN, KEY_PAIR_ID, key_pair, ttl)


# ------------------------------------------------------------------ CloudFront mode


def test_a_cloudfront_url_verifies_names_the_clip_and_carries_the_configured_expiry(key_pair):
    signed = cloudfront_signer(key_pair, ttl=86_400).sign(KEY, NOW)
    url = urlparse(signed.url)
    assert (url.scheme, url.hostname, url.path) == ("https", DOMAIN, f"/{KEY}")
    assert signed.expires_at == NOW + timedelta(seconds=86_400)
    assert parse_qs(url.query)["Expires"] == [str(int(signed.expires_at.timestamp()))]
    assert cloudfront_accepts(signed.url, key_pair.public_key(), NOW)
    assert cloudfront_accepts(signed.url, key_pair.public_key(), signed.expires_at - timedelta(seconds=1))


def test_a_cloudfront_url_names_the_source_version_so_a_clip_cut_again_is_a_new_edge_object(key_pair):
    signer = cloudfront_signer(key_pair)
    old, new = (
        signer.sign(KEY, NOW, version=etag).url
        for etag in ('"3858f62230ac3c915f300c664312c63f"', '"9a0364b9e99bb480dd25e1f0284c8555-2"')
    )
    assert parse_qs(urlparse(old).query)["v"] == ["3858f62230ac3c915f300c664312c63f"]
    assert parse_qs(urlparse(new).query)["v"] == ["9a0364b9e99bb480dd25e1f0284c8555-2"]
    assert cloudfront_accepts(old, key_pair.public_key(), NOW) and cloudfront_accepts(new, key_pair.public_key(), NOW)
    assert not cloudfront_accepts(old.replace("v=3858", "v=9a03"), key_pair.public_key(), NOW), "v is signed"


def test_a_cloudfront_url_fails_once_expired(key_pair):
    signed = cloudfront_signer(key_pair, ttl=3_600).sign(KEY, NOW)
    assert not cloudfront_accepts(signed.url, key_pair.public_key(), signed.expires_at)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda url: url.replace("1000-3000.mp3", "1000-9000.mp3"),  # another clip
        lambda url: url.replace(
            f"Expires={int((NOW + timedelta(days=1)).timestamp())}",
            f"Expires={int((NOW + timedelta(days=30)).timestamp())}",
        ),  # a longer life
        lambda url: url.replace("Signature=", "Signature=AAAA"),
    ],
)
def test_a_tampered_cloudfront_url_fails_verification(key_pair, tamper):
    url = cloudfront_signer(key_pair).sign(KEY, NOW).url
    assert tamper(url) != url
    assert not cloudfront_accepts(tamper(url), key_pair.public_key(), NOW)


def test_a_url_signed_with_another_key_fails_verification(key_pair):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert not cloudfront_accepts(cloudfront_signer(other).sign(KEY, NOW).url, key_pair.public_key(), NOW)


def test_a_key_that_is_not_a_pem_rsa_key_fails_naming_the_variable_without_quoting_it():
    with pytest.raises(ConfigurationError, match="CLOUDFRONT_PRIVATE_KEY_SSM_PARAMETER") as raised:
        signing.load_private_key(
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----",
            "CLOUDFRONT_PRIVATE_KEY_SSM_PARAMETER",
        )
    assert "c2VjcmV0" not in str(raised.value)


# ------------------------------------------------------------------ S3 mode: honest expiry


def s3_signer(credentials, ttl=86_400) -> signing.S3UrlSigner:
    client = boto3.client(
        "s3",
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        aws_session_token=getattr(credentials, "token", None),
        config=Config(signature_version="s3v4"),
    )
    return signing.S3UrlSigner(client, CLIPS_BUCKET, ttl, lambda: credentials)


def x_amz(url: str) -> tuple[datetime, int]:
    query = parse_qs(urlparse(url).query)
    signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return signed_at, int(query["X-Amz-Expires"][0])


def test_refreshable_credentials_expiring_in_an_hour_cap_expires_at_whatever_the_ttl():
    now = datetime.now(UTC)
    credentials = RefreshableCredentials.create_from_metadata(
        {
            "access_key": "ASIAEXAMPLE",
            "secret_key": "secret",
            "token": "session",
            "expiry_time": (now + timedelta(hours=1)).isoformat(),
        },
        refresh_using=lambda: pytest.fail("credentials an hour from expiry are not refreshed"),
        method="test",
    )
    signed = s3_signer(credentials, ttl=86_400).sign(KEY)
    assert now < signed.expires_at <= now + timedelta(hours=1)
    signed_at, expires_in = x_amz(signed.url)
    assert signed.expires_at <= signed_at + timedelta(seconds=expires_in) <= signed.expires_at + timedelta(seconds=1)
    assert expires_in <= 3_600


def test_a_bare_session_token_caps_expires_at_at_the_stated_bound():
    now = datetime.now(UTC).replace(microsecond=0)
    signed = s3_signer(Credentials("ASIAEXAMPLE", "secret", "session"), ttl=86_400).sign(KEY, now)
    assert (
        signed.expires_at == now + timedelta(seconds=signing.SESSION_CREDENTIALS_BOUND_S) == now + timedelta(minutes=15)
    )
    assert x_amz(signed.url)[1] == signing.SESSION_CREDENTIALS_BOUND_S


def test_a_ttl_shorter_than_the_credentials_life_is_kept():
    now = datetime.now(UTC).replace(microsecond=0)
    signed = s3_signer(Credentials("ASIAEXAMPLE", "secret", "session"), ttl=300).sign(KEY, now)
    assert signed.expires_at == now + timedelta(seconds=300) and x_amz(signed.url)[1] == 300


def test_long_term_keys_keep_the_configured_ttl():
    now = datetime.now(UTC).replace(microsecond=0)
    signed = s3_signer(Credentials("AKIDEXAMPLE", "secret"), ttl=86_400).sign(KEY, now)
    assert signed.expires_at == now + timedelta(days=1) and x_amz(signed.url)[1] == 86_400


def test_the_service_reads_the_credentials_its_s3_client_signs_with(monkeypatch):
    monkeypatch.setenv("AWS_SESSION_TOKEN", "lambda-role-session")
    signer = wiring.current().url_signer
    assert isinstance(signer, signing.S3UrlSigner)
    now = datetime.now(UTC).replace(microsecond=0)
    assert signer.sign(KEY, now).expires_at == now + timedelta(seconds=signing.SESSION_CREDENTIALS_BOUND_S)


# ------------------------------------------------------------------ CloudFront mode through the service


@pytest.fixture
def cloudfront_stage(monkeypatch, key_pair, s3):
    """A stage configured for CloudFront, its private key in an SSM SecureString (moto)."""
    ssm = boto3.client("ssm", region_name="us-east-1")
    ssm.put_parameter(Name="/audio-clips/test/cloudfront-private-key", Value=pem(key_pair), Type="SecureString")
    monkeypatch.setenv("CLOUDFRONT_DOMAIN", DOMAIN)
    monkeypatch.setenv("CLOUDFRONT_KEY_PAIR_ID", KEY_PAIR_ID)
    monkeypatch.setenv("CLOUDFRONT_PRIVATE_KEY_SSM_PARAMETER", "/audio-clips/test/cloudfront-private-key")
    wiring.reset()
    return key_pair


def test_the_clip_route_hands_out_a_cloudfront_url_valid_until_expires_at(cloudfront_stage, episode, s3):
    from app import app

    _, source = episode("cbr")
    with Client(app, stage_name="local") as client:
        response = client.http.get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms=1000&duration_ms=2000")
    assert response.status_code == 200, response.body
    body = json.loads(response.body)
    expires_at = datetime.fromisoformat(body["expires_at"])
    assert urlparse(body["clip_url"]).hostname == DOMAIN and urlparse(body["clip_url"]).path == f"/{KEY}"
    source_etag = s3.head_object(Bucket=SOURCE_BUCKET, Key=source)["ETag"].strip('"')
    assert parse_qs(urlparse(body["clip_url"]).query)["v"] == [source_etag]
    now = datetime.now(UTC)
    assert now + timedelta(seconds=86_400 - 5) <= expires_at <= now + timedelta(seconds=86_400)
    public_key = cloudfront_stage.public_key()
    assert cloudfront_accepts(body["clip_url"], public_key, expires_at - timedelta(seconds=1))
    assert not cloudfront_accepts(body["clip_url"], public_key, expires_at)


def test_the_private_key_is_read_from_ssm_once_per_process_and_never_logged(
    cloudfront_stage, episode, monkeypatch, caplog, capsys
):
    from app import app

    reads = []
    original = secrets.fetch_secret
    monkeypatch.setattr(secrets, "fetch_secret", lambda *args: reads.append(args) or original(*args))
    episode("cbr")
    caplog.set_level(logging.DEBUG)
    with Client(app, stage_name="local") as client:
        for start in (1000, 2000, 3000):
            assert client.http.get(f"/api/v1/audio_clips/{EPISODE}?start_time_ms={start}").status_code == 200
    assert len(reads) == 1
    key_body = pem(cloudfront_stage).splitlines()[1]
    assert key_body not in caplog.text and key_body not in capsys.readouterr().out


def test_a_missing_key_parameter_fails_naming_the_variable(cloudfront_stage, monkeypatch):
    monkeypatch.setenv("CLOUDFRONT_PRIVATE_KEY_SSM_PARAMETER", "/audio-clips/test/missing")
    wiring.reset()
    with pytest.raises(ConfigurationError, match="CLOUDFRONT_PRIVATE_KEY_SSM_PARAMETER"):
        _ = wiring.current().url_signer


def test_the_clip_store_reads_no_key_until_a_clip_url_is_signed(cloudfront_stage, monkeypatch):
    monkeypatch.setenv("CLOUDFRONT_PRIVATE_KEY_SSM_PARAMETER", "/audio-clips/test/missing")
    wiring.reset()
    store = wiring.current().clip_store
    store.ping()  # the deep health check's S3 probe does not depend on the signing key
    with pytest.raises(ConfigurationError, match="CLOUDFRONT_PRIVATE_KEY_SSM_PARAMETER"):
        store.presign(KEY)


# ------------------------------------------------------------------ settings

CLOUDFRONT_ENV = {
    "CLOUDFRONT_DOMAIN": DOMAIN,
    "CLOUDFRONT_KEY_PAIR_ID": KEY_PAIR_ID,
    "CLOUDFRONT_PRIVATE_KEY_SSM_PARAMETER": "/audio-clips/prod/cloudfront-private-key",
}


def test_cloudfront_is_off_by_default_and_on_with_all_three_variables():
    assert Settings.from_env({}).cloudfront_domain is None
    settings = Settings.from_env(CLOUDFRONT_ENV)
    assert (
        settings.cloudfront_domain,
        settings.cloudfront_key_pair_id,
        settings.cloudfront_private_key_ssm_parameter,
    ) == (DOMAIN, KEY_PAIR_ID, "/audio-clips/prod/cloudfront-private-key")


@pytest.mark.parametrize(
    "name, value",
    [
        ("CLOUDFRONT_DOMAIN", "https://d111111abcdef8.cloudfront.net"),
        ("CLOUDFRONT_DOMAIN", "d111111abcdef8.cloudfront.net/clips"),
        ("CLOUDFRONT_DOMAIN", "localhost"),
        ("CLOUDFRONT_KEY_PAIR_ID", ""),
        ("CLOUDFRONT_KEY_PAIR_ID", "k2 jcj"),
        ("CLOUDFRONT_PRIVATE_KEY_SSM_PARAMETER", ""),
    ],
)
def test_a_malformed_or_missing_cloudfront_variable_fails_at_start_naming_it(name, value):
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_env({**CLOUDFRONT_ENV, name: value})


@pytest.mark.parametrize("name", ["CLOUDFRONT_KEY_PAIR_ID", "CLOUDFRONT_PRIVATE_KEY_SSM_PARAMETER"])
def test_a_key_setting_without_the_domain_fails_naming_both(name):
    with pytest.raises(ConfigurationError, match=f"{name} is set but CLOUDFRONT_DOMAIN is not"):
        Settings.from_env({name: CLOUDFRONT_ENV[name]})
