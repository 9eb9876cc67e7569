"""A webhook target on 127.0.0.1 for the tests: keeps every JSON body it is sent and what came
with every request (method, path, Authorization), whatever the method. It can answer 500 to the
first few requests (to see the sender retry), answer each request with a status the test chose
(a redirect, with its Location), hold the first request until told, and serve https with a
certificate made here (a client trusts it through SSL_CERT_FILE)."""
from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def self_signed(folder: Path) -> tuple[Path, Path]:
    """(certificate, key) for https://127.0.0.1, the certificate its own authority."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge-ids test receiver")])
    now = datetime.datetime.now(datetime.timezone.utc)
    public = key.public_key()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public),
                           critical=False)
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "receiver.crt", folder / "receiver.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class WebhookReceiver:
    def __init__(self, failures: int = 0, path: str = "/", answers: tuple[int, ...] = (),
                 location: str | None = None, tls: tuple[Path, Path] | None = None,
                 hold: threading.Event | None = None):
        """answers[i]: the status of request i+1 (after them: 500 for the first `failures`,
        then 204); location: the Location of a 3xx answer; hold: the first request waits for
        it before it is answered."""
        self.bodies, self.requests, self.seen = [], 0, []
        self.arrived = threading.Event()  # set when the first request is in
        outer, lock = self, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with lock:
                    outer.requests += 1
                    number = outer.requests
                    outer.seen.append({"method": self.command, "path": self.path,
                                       "authorization": self.headers.get("Authorization")})
                outer.arrived.set()
                if number == 1 and hold is not None:
                    hold.wait(30)
                status = (answers[number - 1] if number <= len(answers)
                          else 500 if number <= failures else 204)
                if 200 <= status < 300 and self.command == "POST":
                    outer.bodies.append(json.loads(body))
                self.send_response(status)
                if 300 <= status < 400 and location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_GET = do_PUT = do_HEAD = answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}{path}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
