#!/usr/bin/env bash
# Seed corpora for the fuzz targets, from files any Debian machine has and pare's test data.
set -euo pipefail
cd "$(dirname "$0")"
c=corpus
mkdir -p $c/{layer,elf,ldcache,reference,manifest,packages,scripts}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# Layers: small tars with files, links, hard links, whiteouts and an opaque dir.
mkdir -p "$tmp/r/etc/d" "$tmp/r/usr/bin"
echo a > "$tmp/r/etc/a"; ln -s a "$tmp/r/etc/l"; ln "$tmp/r/etc/a" "$tmp/r/etc/h"
touch "$tmp/r/etc/.wh.gone" "$tmp/r/etc/d/.wh..wh..opq"
cp /bin/true "$tmp/r/usr/bin/"
tar -C "$tmp/r" -cf $c/layer/basic.tar .
tar -C "$tmp/r" --format=pax -cf $c/layer/pax.tar .
tar -C "$tmp/r" --format=gnu -czf $c/layer/basic.tar.gz .
# ELF objects.
cp /bin/true $c/elf/true; cp "$(readlink -f /lib/x86_64-linux-gnu/libc.so.6)" $c/elf/libc 2>/dev/null || true
[ -f /etc/ld.so.cache ] && cp /etc/ld.so.cache $c/ldcache/host
# References.
for r in nginx docker.io/library/nginx:1.27 registry.example.com:5000/team/api:1.4@sha256:0000000000000000000000000000000000000000000000000000000000000000 oci:./dir:tag docker-archive:app.tar:app:1; do
  printf '%s' "$r" > "$c/reference/$(printf '%s' "$r" | sha1sum | cut -c1-12)"
done
# Manifests, indexes, configs.
printf '%s' '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}' > $c/manifest/manifest
printf '%s' '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}' > $c/manifest/index
printf '%s' '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/sh"],"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":[]}}' > $c/manifest/config
printf '%s' '{"auths":{"registry.example":{"auth":"dXNlcjpwYXNz"},"https://index.docker.io/v1/":{"username":"u","password":"p"}}}' > $c/manifest/docker-config
# pare serve's event bodies: a distribution envelope and Harbor's webhook.
printf '%s' '{"events":[{"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","repository":"team/api","tag":"1.4"},"request":{"host":"registry.example"}}]}' > $c/manifest/envelope
sed -e 's/@DIGEST@/sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a/' -e 's/@TAG@/1.4/g' -e 's/@HOST@/harbor.example/' \
  -e 's#@REPOSITORY@#library/api#g' -e 's/@NAMESPACE@/library/' -e 's/@NAME@/api/' ../testdata/harbor/push_artifact.json > $c/manifest/harbor
# Package databases.
head -c 65536 /var/lib/dpkg/status > $c/packages/dpkg-status
printf 'P:musl\nV:1.2.4-r2\nA:x86_64\nD:so:libc.musl-x86_64.so.1 !foo cmd:sh>=1\nF:lib\nR:ld-musl-x86_64.so.1\nZ:Q1AAAA=\n\n' > $c/packages/apk
# Shell scripts and configuration files.
for f in /etc/init.d/* /usr/bin/*-config /etc/ssl/openssl.cnf /etc/nsswitch.conf; do
  [ -f "$f" ] && [ "$(stat -c %s "$f")" -lt 65536 ] && cp "$f" "$c/scripts/$(basename "$f")" || true
done
echo "seeds in $(pwd)/$c"
