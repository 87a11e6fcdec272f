"""Hooks for the schemathesis run of .ci/schemathesis.

- Every valid Idempotency-Key of a request meant to be valid is made unique: it reuses
  a few short values across unrelated requests, and Trcker answers a key
  reused for another request with 422, as the contract says. An invalid key
  is left as generated, so that its rejection is still checked.
- The key the run authenticates with is never the one it revokes: a revoke
  of it is pointed at a spare key instead.
"""
import os
import re
import uuid

import schemathesis

VALID_KEY = re.compile(r"^[!-~]{1,255}$")
OWN_KEY = os.environ.get("TRCKER_FUZZ_KEY_ID", "")
SPARE_KEY = os.environ.get("TRCKER_FUZZ_SPARE_KEY_ID", "")


@schemathesis.hook
def before_call(context, case, kwargs):
    # Only a request meant to be valid: an edit makes schemathesis judge the
    # case again, and a negative case must reach Trcker as generated.
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if positive and isinstance(key, str) and VALID_KEY.match(key):
        headers["Idempotency-Key"] = (key[:200] + "-" + uuid.uuid4().hex)[:255]
    if (
        OWN_KEY
        and SPARE_KEY
        and case.path_parameters
        and case.path_parameters.get("id") == OWN_KEY
    ):
        case.path_parameters["id"] = SPARE_KEY
