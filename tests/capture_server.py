"""A stand-in for "some other host": records every request and answers with fixed bytes."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler

from loopback import LoopbackServer


class CaptureServer(LoopbackServer):
    def __init__(self, body: bytes = b"", content_type: str = "application/octet-stream"):
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                outer.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers)})
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

        super().__init__(Handler)
        self.url = self.base_url

    def saw_header(self, name: str) -> bool:
        return any(name.lower() in (k.lower() for k in r["headers"]) for r in self.requests)
