"""
Who made a request, as the audit log records it: the ONE place the identity is derived.

Pure. When authentication lands (issue 16), this is the function to change (e.g. to the
id the front door's token check resolved); every caller takes the identity from here.
"""

from __future__ import annotations

#: Tokens look like `sk_concord_<id>_<secret>` (issue 16): the id is public, the secret
#: is not. Anything else is never logged (it could be a secret in another shape).
TOKEN_PREFIX = "sk_concord_"


def token_id(token: str | None) -> str | None:
    """
    The public id of `token`, or None (no token, or a token not of the documented shape).

    The secret part is never returned: for `sk_concord_<id>_<secret>` the result is
    `<id>` (which has no "_"); a token of another shape gives None.
    """
    if token is None or not token.startswith(TOKEN_PREFIX):
        return None
    ident, sep, secret = token[len(TOKEN_PREFIX):].partition("_")
    if not ident or not sep or not secret:
        return None
    return ident
