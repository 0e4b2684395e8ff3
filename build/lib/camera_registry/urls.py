"""One way to add query parameters to a URL or DSN.

Appending `?key=value` by hand breaks as soon as the URL already has a query: the embedded
database's DSN is `postgresql://postgres@/postgres?host=…&port=…`, and a second `?` turns the
port into `5432?search_path=…`. Every place that adds parameters to a URL goes through here.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit


def with_query(url: str, **params: str | int | None) -> str:
    """`url` with `params` merged into its query: a given key replaces the URL's own value,
    None removes it, every other parameter keeps its place and value."""
    parts = urlsplit(url)
    pairs = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    pairs += [(k, str(v)) for k, v in params.items() if v is not None]
    # "/" stays readable: the embedded DSN's host is a socket directory.
    query = urlencode(pairs, quote_via=quote, safe="/")
    return urlunsplit(parts._replace(query=query))
