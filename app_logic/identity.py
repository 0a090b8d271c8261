"""Who is this visitor? A secret the browser keeps, so that a reload or a server
restart does not make someone a stranger to their own things.

The first time a browser comes, the server makes a random secret and asks the
browser to keep it in a cookie (``COOKIE``: a year, this site only, sent back
only to it). Every later page load sends it back, and Streamlit hands the
page its cookies (``st.context.cookies``). What the app stores next to a
visitor's things (a saved network's owner, drawings, the training that is
running) is only a hash of the secret, ``visitor_id``: reading the server's
files or database never reveals a secret that would let someone act as its
owner. A browser that refuses the cookie keeps its identity for as long as
its Streamlit session lasts.
"""

import hashlib
import re
import secrets

__all__ = ["COOKIE", "new_secret", "valid_secret", "visitor_id", "cookie_script"]

COOKIE = "digitlab_visitor"
MAX_AGE_S = 365 * 24 * 3600
_SECRET = re.compile(r"[0-9a-f]{32}")


def new_secret():
    """32 random hex digits (128 bits)."""
    return secrets.token_hex(16)


def valid_secret(value):
    """True for a string that could be a secret this module made (the browser
    controls the cookie's value, so anything else is ignored)."""
    return isinstance(value, str) and _SECRET.fullmatch(value) is not None


def visitor_id(secret):
    """The 32-hex-digit hash of ``secret`` that is stored with a visitor's things."""
    if not valid_secret(secret):
        raise ValueError("not a visitor secret")
    return hashlib.sha256(f"digitlab-visitor:{secret}".encode()).hexdigest()[:32]


def cookie_script(secret):
    """The few lines of JavaScript that ask the browser to keep ``secret``."""
    if not valid_secret(secret):
        raise ValueError("not a visitor secret")
    return (f"<script>document.cookie = '{COOKIE}={secret}; Max-Age={MAX_AGE_S}; Path=/; "
            f"SameSite=Strict';</script>")
