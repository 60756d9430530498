#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Builds the sidecar container image from the local build, with no registry and no base image:
the stripped binary, exactly the shared libraries it loads (those it links and those it opens
lazily with dlopen, found by scanning src/ for the sonames it names, each with its own
dependencies), CA certificates, /etc/passwd and /etc/group with the non-root user 1337, and an
ld.so cache. The root file system becomes one reproducible layer (sorted entries, fixed times,
owner root) written as an OCI image layout in a tar archive that also carries a docker-archive
manifest.json, so `podman load`, `docker load` and `skopeo copy oci-archive:` all accept it.

usage: scripts/image.py BINARY OUT.tar [--tag sidecar:VERSION] [--rootfs DIR]
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MTIME = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
UID = 1337
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def lazy_sonames():
    """The sonames src/ opens with dlopen: every "libX.so.N" string literal in a file that
    calls dlopen, plus the files its loaders are in (core/lazylib.c, net/egress.c)."""
    names = set()
    for path in sorted((ROOT / "src").rglob("*.c")):
        text = path.read_text()
        if "dlopen" not in text:
            continue
        names.update(re.findall(r'"(lib[A-Za-z0-9_+.-]+\.so\.[0-9]+)"', text))
    return sorted(names)


def resolve_soname(soname):
    out = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True,
                         check=True).stdout
    for line in out.splitlines():
        m = re.match(r"\s*(\S+) \((libc6,x86-64|[^)]*)\) => (\S+)", line)
        if m and m.group(1) == soname and "x86-64" in m.group(2):
            return m.group(3)
    raise SystemExit(f"image: {soname} (opened with dlopen) is not installed")


def ldd(path):
    """The libraries <path> needs, as {soname or path: resolved path}."""
    out = subprocess.run(["ldd", path], capture_output=True, text=True, check=True).stdout
    libs = {}
    for line in out.splitlines():
        line = line.strip()
        m = re.match(r"(\S+) => (\S+) \(0x", line)
        if m:
            libs[m.group(1)] = m.group(2)
        elif line.startswith("/"):
            p = line.split()[0]
            libs[p] = p
        elif "not found" in line:
            raise SystemExit(f"image: {path}: {line}")
    return libs


def closure(binary):
    """Every library the binary links or opens, with their dependencies: {path in image: file}."""
    todo = [binary] + [resolve_soname(s) for s in lazy_sonames()]
    seen, files = set(), {}
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        if p != binary:
            files[p] = os.path.realpath(p)
        for _, resolved in ldd(p).items():
            if resolved not in seen:
                todo.append(resolved)
    return files


def build_rootfs(binary, rootfs):
    for d in ("usr/local/bin", "usr/lib/x86_64-linux-gnu", "usr/lib64", "etc/ssl/certs", "tmp",
              "var/lib/sidecar", "var/log/app", "etc/podinfo", "vault/secrets"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    os.symlink("usr/lib", rootfs / "lib")
    os.symlink("usr/lib64", rootfs / "lib64")
    subprocess.run(["strip", "--strip-unneeded", "-o", str(rootfs / "usr/local/bin/sidecar"),
                    binary], check=True)
    libs = closure(binary)
    for want, real in sorted(libs.items()):
        # Every library goes where the loader looks for it, under usr/ (merged /usr).
        rel = want.lstrip("/")
        if rel.startswith("lib/") or rel.startswith("lib64/"):
            rel = "usr/" + rel
        dest = rootfs / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        realrel = real.lstrip("/")
        if realrel.startswith("lib/"):
            realrel = "usr/" + realrel
        realdest = rootfs / realrel
        if not realdest.exists():
            realdest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(real, realdest)
        if dest != realdest and not dest.exists():
            os.symlink(os.path.relpath(realdest, dest.parent), dest)
    shutil.copy2(CA_BUNDLE, rootfs / CA_BUNDLE.lstrip("/"))
    (rootfs / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/usr/sbin/nologin\n"
        f"sidecar:x:{UID}:{UID}:sidecar:/nonexistent:/usr/sbin/nologin\n")
    (rootfs / "etc/group").write_text(f"root:x:0:\nsidecar:x:{UID}:\n")
    (rootfs / "etc/nsswitch.conf").write_text("passwd: files\ngroup: files\nhosts: files dns\n")
    (rootfs / "etc/ld.so.conf").write_text("/usr/lib/x86_64-linux-gnu\n")
    subprocess.run(["/sbin/ldconfig", "-r", str(rootfs)], check=True)
    return sorted(libs)


def layer_tar(rootfs):
    """A reproducible tar of <rootfs>: sorted, fixed mtime, owned by root; the state and log
    directories belong to the sidecar user."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        paths = sorted(p for p in rootfs.rglob("*"))
        for p in paths:
            rel = p.relative_to(rootfs).as_posix()
            info = tar.gettarinfo(str(p), arcname=rel)
            info.mtime = MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if rel in ("var/lib/sidecar", "var/log/app", "vault/secrets"):
                info.uid = info.gid = UID
            if rel == "tmp":
                info.mode = 0o1777
            if info.isreg():
                with open(p, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buf.getvalue()


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def write_archive(out, layer, tag, version, entrypoint=("/usr/local/bin/sidecar",),
                  user=f"{UID}:{UID}"):
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=MTIME, compresslevel=9) as g:
        g.write(layer)
    layer_gz = gz.getvalue()
    created = "1970-01-01T00:00:00Z" if MTIME == 0 else \
        __import__("datetime").datetime.utcfromtimestamp(MTIME).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = {
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": user,
            "Entrypoint": list(entrypoint),
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin",
                    f"SSL_CERT_FILE={CA_BUNDLE}"],
            "WorkingDir": "/",
            "Labels": {"org.opencontainers.image.title": "sidecar",
                       "org.opencontainers.image.version": version},
        },
        "rootfs": {"type": "layers", "diff_ids": [sha(layer)]},
        "history": [{"created": created, "created_by": "scripts/image.py"}],
    }
    config_b = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha(config_b), "size": len(config_b)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha(layer_gz), "size": len(layer_gz)}],
    }
    manifest_b = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    name, _, ref = tag.rpartition(":")
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": sha(manifest_b), "size": len(manifest_b),
                       "annotations": {"org.opencontainers.image.ref.name": ref,
                                       "io.containerd.image.name": tag}}],
    }
    blob = lambda b: "blobs/sha256/" + sha(b).split(":")[1]  # noqa: E731
    docker = [{"Config": blob(config_b), "RepoTags": [tag], "Layers": [blob(layer_gz)]}]
    entries = [
        ("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
        ("index.json", json.dumps(index, sort_keys=True).encode()),
        ("manifest.json", json.dumps(docker).encode()),
        (blob(config_b), config_b),
        (blob(manifest_b), manifest_b),
        (blob(layer_gz), layer_gz),
    ]
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
            tar.addfile(info)
        for name_, data in entries:
            info = tarfile.TarInfo(name_)
            info.size, info.mode, info.mtime = len(data), 0o644, MTIME
            tar.addfile(info, io.BytesIO(data))
    return len(layer), len(layer_gz)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("binary")
    ap.add_argument("out")
    ap.add_argument("--tag", default=None)
    ap.add_argument("--rootfs", default=None, help="keep the root file system in this directory")
    a = ap.parse_args()
    version = subprocess.run([a.binary, "--version"], capture_output=True,
                             text=True).stdout.split()[1] if a.tag is None else a.tag
    tag = a.tag or f"sidecar:{version}"
    version = tag.rpartition(":")[2]
    tmp = Path(tempfile.mkdtemp(prefix="sidecar-image."))
    rootfs = Path(a.rootfs) if a.rootfs else tmp / "rootfs"
    if rootfs.exists():
        shutil.rmtree(rootfs)
    rootfs.mkdir(parents=True)
    try:
        libs = build_rootfs(a.binary, rootfs)
        layer = layer_tar(rootfs)
        raw, packed = write_archive(a.out, layer, tag, version)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"image {tag}: {a.out} ({os.path.getsize(a.out)} bytes; root file system "
          f"{raw} bytes, {packed} compressed; {len(libs)} shared libraries)")
    for lib in libs:
        print(f"  {lib}")


if __name__ == "__main__":
    sys.exit(main())
