"""Secrets named by SSM Parameter Store parameters: each fetched by what needs it, when it first needs it.

Powertools Parameters decrypts and caches each value for ``SECRET_MAX_AGE_S``; it is imported inside the fetch,
so that a cold start serving a cache hit never pays for it. SSM calls are bounded (``SSM_CONFIG``): at most
``SSM_ATTEMPTS`` x (connect + read timeout), about 6 s, once per process; inside ``deadlines.until`` no attempt
starts that could not end before the deadline.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable

from botocore.config import Config

from chalicelib import deadlines
from chalicelib.errors import ConfigurationError, SecretUnavailable

SECRET_MAX_AGE_S = 900
SSM_ATTEMPTS = 2
SSM_CONNECT_TIMEOUT_S = 1
SSM_READ_TIMEOUT_S = 2
SSM_CONFIG = Config(
    connect_timeout=SSM_CONNECT_TIMEOUT_S,
    read_timeout=SSM_READ_TIMEOUT_S,
    retries={"mode": "standard", "total_max_attempts": SSM_ATTEMPTS},
)
_PERMANENT = {"ParameterNotFound", "ParameterVersionNotFound", "AccessDeniedException", "InvalidKeyId"}
_POWERTOOLS = "aws_lambda_powertools.utilities.parameters"


def fetch_secret(parameter: str, purpose: str) -> str:
    """The decrypted value of one SSM parameter, for ``purpose`` (what needs it, named in errors).

    A parameter that is missing or may not be read is a ConfigurationError (a 500: retrying cannot help); a
    throttled, failing or unreachable SSM is a SecretUnavailable (a 503 with Retry-After)."""
    from aws_lambda_powertools.utilities.parameters import GetParameterError, get_parameter

    _install_bounded_provider()
    try:
        return get_parameter(parameter, decrypt=True, max_age=SECRET_MAX_AGE_S)
    except GetParameterError as error:
        cause = error.__context__  # Powertools wraps every SDK error, the original stays the context
        code = str(getattr(cause, "response", {}).get("Error", {}).get("Code", ""))
        if code in _PERMANENT:
            raise ConfigurationError(
                f"{purpose} cannot be read: SSM parameter {parameter} answers {code}", detail=repr(cause)
            ) from None
        raise SecretUnavailable(
            f"{purpose} cannot be read right now; try again shortly", detail=f"SSM parameter {parameter}: {cause!r}"
        ) from None


def fetcher(purpose: str) -> Callable[[Iterable[str]], dict[str, str]]:
    """``fetch(names) -> {name: value}`` as ``Settings.with_secrets`` takes it, for one purpose."""
    return lambda names: {name: fetch_secret(name, purpose) for name in names}


def _install_bounded_provider() -> None:
    """Powertools' shared SSM provider, with a client whose timeouts and retries fit a request's budget."""
    from aws_lambda_powertools.utilities.parameters import base
    from aws_lambda_powertools.utilities.parameters.ssm import SSMProvider

    if "ssm" not in base.DEFAULT_PROVIDERS:
        provider = SSMProvider(boto_config=SSM_CONFIG)
        provider.client.meta.events.register("before-send.ssm", _refuse_late_attempts)
        base.DEFAULT_PROVIDERS["ssm"] = provider


class DeadlineReached(Exception):
    """An SSM attempt was not sent: it could not end before the request's deadline."""


def _refuse_late_attempts(request, **kwargs) -> None:
    left = deadlines.left()
    if left is not None and left < SSM_CONNECT_TIMEOUT_S + SSM_READ_TIMEOUT_S:
        raise DeadlineReached(f"not sent: {left:.1f} s left before the request's deadline")


def reset() -> None:
    """Forget fetched values and the SSM client (tests); imports nothing that was not imported already."""
    module = sys.modules.get(_POWERTOOLS + ".base")
    if module is not None:
        module.DEFAULT_PROVIDERS.pop("ssm", None)
