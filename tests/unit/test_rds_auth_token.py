"""The RDS IAM login token the app signs without boto3 is byte for byte the one botocore signs."""

from datetime import UTC, datetime

import botocore.auth
import botocore.session
import pytest

from chalicelib import aws

AT = datetime(2026, 11, 28, 6, 59, 7, tzinfo=UTC)
# A session token as Lambda's look: long, with the characters that need percent-encoding.
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEFAaCXVzLWVhc3QtMSJHMEUCIQ+Dx/k=" * 12


def _botocore_token(monkeypatch, host, port, user, region, credentials) -> str:
    access_key, secret_key, token = credentials
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: AT.replace(tzinfo=None))
    rds = botocore.session.get_session().create_client(
        "rds",
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        aws_session_token=token,
    )
    return rds.generate_db_auth_token(DBHostname=host, Port=port, DBUsername=user, Region=region)


@pytest.mark.parametrize(
    ("host", "port", "user", "region", "token"),
    [
        ("billing.cluster-abc123.us-east-1.rds.amazonaws.com", 5432, "billing_runtime", "us-east-1", SESSION_TOKEN),
        ("billing.proxy-xyz.eu-west-1.rds.amazonaws.com", 5432, "billing_runtime", "eu-west-1", None),
        ("Billing.Cluster-ABC.us-east-1.rds.amazonaws.com", 6432, "billing_other", "us-east-1", SESSION_TOKEN),
        ("db.internal.example", 443, "a user+with@odd/chars=~", "ap-southeast-2", "t0ken with spaces&more"),
        ("localhost", 54321, "billing_runtime", "us-east-1", SESSION_TOKEN),
    ],
)
def test_the_token_signed_without_boto3_is_the_one_botocore_signs_for_the_same_credentials_and_clock(
    monkeypatch, host, port, user, region, token
):
    credentials = ("ASIAEXAMPLEKEY000001", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)

    ours = aws.sign_rds_auth_token(host, port, user, region, credentials, AT)

    assert ours == _botocore_token(monkeypatch, host, port, user, region, credentials)


def test_the_credentials_are_read_from_the_environment_as_botocore_reads_them(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIAENVKEY0000000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env/secret+key")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token")
    monkeypatch.setenv("AWS_SECURITY_TOKEN", "security-token")  # the legacy name, which botocore reads first
    found = botocore.session.get_session().get_credentials()
    assert aws.environment_credentials() == (found.access_key, found.secret_key, found.token)

    monkeypatch.delenv("AWS_SECURITY_TOKEN")
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    assert aws.environment_credentials() == ("ASIAENVKEY0000000001", "env/secret+key", None)


def test_without_credentials_in_the_environment_the_login_is_left_to_botocore(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIAENVKEY0000000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    signed = aws.rds_auth_token_from_environment("db.example", 5432, "billing_runtime", "us-east-1")
    assert signed.startswith("db.example:5432/?Action=connect&DBUser=billing_runtime&")

    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")  # a partial pair: botocore decides (and says what is missing)
    assert aws.rds_auth_token_from_environment("db.example", 5432, "billing_runtime", "us-east-1") is None
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    assert aws.rds_auth_token_from_environment("db.example", 5432, "billing_runtime", "us-east-1") is None
