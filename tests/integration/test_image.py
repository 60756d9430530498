# SPDX-License-Identifier: Apache-2.0
"""`make image`'s archive (scripts/image.py): an OCI image layout that is also a docker-archive,
holding the binary, exactly the shared libraries it loads (the lazily opened libcurl and libcrypto
with their dependencies included; not libsnappy, whose format the binary writes itself), CA
certificates and the user 1337; skopeo reads it both ways, and the binary runs from the image's
root file system with only what it holds."""
import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile

import pytest

from conftest import BIN, ROOT


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    d = tmp_path_factory.mktemp("image")
    out = d / "sidecar-image.tar"
    r = subprocess.run(["/usr/bin/python3", str(ROOT / "scripts" / "image.py"), BIN, str(out),
                        "--tag", "sidecar:test", "--rootfs", str(d / "rootfs")],
                       capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, SOURCE_DATE_EPOCH="1700000000"))
    assert r.returncode == 0, r.stderr
    return out, d / "rootfs", r.stdout


def blobs(path):
    with tarfile.open(path) as t:
        return {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}


def test_layout_and_config(image):
    out, _, _ = image
    files = blobs(out)
    index = json.loads(files["index.json"])
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    mdesc = index["manifests"][0]
    manifest = json.loads(files["blobs/sha256/" + mdesc["digest"].split(":")[1]])
    config = json.loads(files["blobs/sha256/" + manifest["config"]["digest"].split(":")[1]])
    assert config["config"]["User"] == "1337:1337"
    assert config["config"]["Entrypoint"] == ["/usr/local/bin/sidecar"]
    docker = json.loads(files["manifest.json"])
    assert docker[0]["RepoTags"] == ["sidecar:test"]
    layer = files["blobs/sha256/" + manifest["layers"][0]["digest"].split(":")[1]]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as t:
        names = {m.name: m for m in t.getmembers()}
    for want in ("usr/local/bin/sidecar", "etc/passwd", "etc/group",
                 "etc/ssl/certs/ca-certificates.crt", "etc/ld.so.cache",
                 "usr/lib/x86_64-linux-gnu/libcurl.so.4",
                 "usr/lib/x86_64-linux-gnu/libcrypto.so.3", "usr/lib/x86_64-linux-gnu/libuv.so.1"):
        assert want in names, want
    assert "usr/lib/x86_64-linux-gnu/libsnappy.so.1" not in names
    assert names["var/lib/sidecar"].uid == 1337
    assert all(m.mtime == 1700000000 for m in names.values())


def test_reproducible(image, tmp_path):
    out, _, _ = image
    again = tmp_path / "again.tar"
    subprocess.run(["/usr/bin/python3", str(ROOT / "scripts" / "image.py"), BIN, str(again),
                    "--tag", "sidecar:test"], check=True, capture_output=True, timeout=300,
                   env=dict(os.environ, SOURCE_DATE_EPOCH="1700000000"))
    assert again.read_bytes() == out.read_bytes()


@pytest.mark.skipif(not shutil.which("skopeo"), reason="skopeo is not installed")
@pytest.mark.parametrize("transport", ["oci-archive", "docker-archive"])
def test_skopeo_reads_it(image, transport):
    out, _, _ = image
    r = subprocess.run(["skopeo", "inspect", f"{transport}:{out}"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert (info["Os"], info["Architecture"]) == ("linux", "amd64")


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
@pytest.mark.skipif(bool(os.environ.get("SIDECAR_SANITIZED")),
                    reason="a sanitizer build's LeakSanitizer needs /proc, which the image lacks")
def test_runs_from_its_root_file_system(image):
    """In a chroot of the image's files (nothing from the host), as user 1337: the binary starts,
    and loading libcurl lazily works (a config fetch reaches the point of connecting)."""
    _, rootfs, _ = image
    run = ["chroot", "--userspec=1337:1337", str(rootfs), "/usr/local/bin/sidecar"]
    r = subprocess.run(run + ["--version"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("sidecar "), r.stderr
    r = subprocess.run(run + ["config", "--once", "--retries", "0", "--source",
                              "https://127.0.0.1:9/x", "--dest", "/tmp/x", "--admin",
                              "127.0.0.1:0"], capture_output=True, text=True, timeout=60)
    assert "Couldn't connect to server" in r.stdout + r.stderr, r.stdout + r.stderr
    assert "cannot load" not in r.stdout + r.stderr
