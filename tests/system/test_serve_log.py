"""`flask serve`'s access log: the path of each request, never its query string (lookups
carry emails and phones there)."""

from contacts.system.cli import RequestLog


def test_the_access_log_leaves_the_query_string_out():
    handler = RequestLog.__new__(RequestLog)  # only what log_request reads
    handler.command, handler.request_version = "GET", "HTTP/1.1"
    handler.path = "/api/v1/contacts/lookup?email=ada%40example.com&phone=%2B33612000001"
    logged = []
    handler.log = lambda level, text, *args: logged.append(text % args)

    handler.log_request(200, 512)

    assert logged == ['"GET /api/v1/contacts/lookup HTTP/1.1" 200 512']
    assert handler.path.endswith("phone=%2B33612000001")  # the request itself is untouched
