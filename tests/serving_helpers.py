"""Helpers the serving tests share (no tests here): model copies, requests, a server on port 0."""
from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from tensorflow_serving.apis import prediction_log_pb2
from tlpipe.serving.client import predict_request  # noqa: F401  (the tests' request builder)
from tlpipe.serving.config import ModelConfig, VersionPolicy
from tlpipe.serving.server import ModelServer, ServerOptions


def copy_model(pushed: Path, dst: Path) -> Path:
    """A private model directory whose version 1 is the newest pushed version (the fixture's
    directory stays untouched, however many versions it holds)."""
    newest = max((p for p in pushed.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    dst.mkdir(parents=True)
    shutil.copytree(newest, dst / "1")
    return dst


def add_version(model_dir: Path, number: int, source: int = 1,
                warmup: list | None = None) -> Path:
    """Copies version `source` as version `number`, atomically (temp name, then rename)."""
    staging = model_dir / f".tmp-{number}"
    shutil.copytree(model_dir / str(source), staging)
    shutil.rmtree(staging / "assets.extra", ignore_errors=True)
    if warmup is not None:
        write_warmup(staging, warmup)
    os.rename(staging, model_dir / str(number))
    return model_dir / str(number)


def two_versions(pushed: Path, dst_dir: Path) -> Path:
    """A private model directory holding version 1 (as pushed) and a copy of it as version 2."""
    base = copy_model(pushed, dst_dir / "flowers")
    add_version(base, 2)
    return base


def write_warmup(version_dir: Path, requests: list) -> Path:
    """`assets.extra/tf_serving_warmup_requests`, the TFRecord of PredictionLogs the pusher writes."""
    import tensorflow as tf

    path = version_dir / "assets.extra" / "tf_serving_warmup_requests"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog()
            log.predict_log.request.CopyFrom(request)
            writer.write(log.SerializeToString())
    return path


def sample_images(tiny_images: Path) -> dict[str, bytes]:
    """One JPEG and one PNG per class: {'class_a.jpg': ..., 'class_a.png': ...}."""
    found = {}
    for class_dir in sorted(p for p in tiny_images.iterdir() if p.is_dir()):
        for suffix in (".jpg", ".png"):
            path = next(p for p in sorted(class_dir.iterdir()) if p.suffix == suffix)
            found[f"{class_dir.name}{suffix}"] = path.read_bytes()
    return found


def noise_png(width: int, height: int, seed: int = 0) -> bytes:
    """Incompressible pixels: the encoded size is about 3 bytes per pixel."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", compress_level=0)
    return out.getvalue()


def flat_png(width: int, height: int) -> bytes:
    """A large canvas that compresses to a few kilobytes (a decompression bomb in miniature)."""
    out = io.BytesIO()
    Image.new("L", (width, height)).save(out, format="PNG", optimize=True)
    return out.getvalue()


def start_server(models: list[ModelConfig], **options) -> ModelServer:
    options.setdefault("grpc_port", 0)
    options.setdefault("rest_port", 0)
    return ModelServer(ServerOptions(models=models, **options)).start()


def model(base: Path, name: str = "flowers", policy: VersionPolicy | None = None,
          labels: dict[str, int] | None = None) -> ModelConfig:
    return ModelConfig(name, str(base), policy or VersionPolicy(), labels or {})


def self_signed_certificate() -> tuple[bytes, bytes]:
    """A self-signed localhost certificate and key (PEM), usable as server cert, CA and client cert."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))
